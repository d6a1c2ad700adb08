"""The episode-done input (BeliefEncoder(done_input=True), the original's add_done_info): read
identically online by VariationalBelief and by the ELBO's re-encoding of stored trajectories."""

from __future__ import annotations

import pytest
import torch
from torchrl.envs import TransformedEnv

from torchrl_bamdp.data import TrajectoryBuffer
from torchrl_bamdp.data.trajectory_buffer import DEFAULT_TRAJECTORY_KEYS
from torchrl_bamdp.envs import BAMDPEnv, GridNaviEnv
from torchrl_bamdp.modules import BeliefEncoder, GridCellRewardDecoder
from torchrl_bamdp.objectives import ELBOLoss
from torchrl_bamdp.transforms import (
    BELIEF_HIDDEN,
    BELIEF_LOGVAR,
    BELIEF_MEAN,
    VariationalBelief,
    varibad_transforms,
)

EPISODE_LENGTH = 5
EPISODES = 3
HORIZON = EPISODE_LENGTH * EPISODES
LATENT = 5


def make_encoder(done_input: bool = True, seed: int = 0) -> BeliefEncoder:
    torch.manual_seed(seed)
    return BeliefEncoder(
        obs_dim=2,
        action_dim=5,
        discrete_actions=True,
        latent_dim=LATENT,
        hidden_size=16,
        done_input=done_input,
    )


def rollout(encoder: BeliefEncoder, num_envs: int = 3, seed: int = 0):
    base = BAMDPEnv(GridNaviEnv(num_envs=num_envs), EPISODE_LENGTH, EPISODES, seed=seed)
    env = TransformedEnv(base, varibad_transforms(encoder))
    torch.manual_seed(seed)
    with torch.no_grad():
        return env.rollout(HORIZON, break_when_any_done=False)


class RecordingEncoder(torch.nn.Module):
    """Delegates to a real encoder (done_input included) and records what ``sequence`` returns."""

    def __init__(self, inner: BeliefEncoder) -> None:
        super().__init__()
        self.inner = inner
        self.latent_dim = inner.latent_dim
        self.done_input = inner.done_input
        self.calls = []

    def sequence(self, *args, **kwargs):
        out = self.inner.sequence(*args, **kwargs)
        self.calls.append((kwargs, out))
        return out


def test_online_belief_reads_the_episode_done_flag():
    encoder = make_encoder()
    belief = VariationalBelief(encoder)
    assert belief.in_keys[-1] == "episode_done"
    assert "episode_done" not in VariationalBelief(make_encoder(done_input=False)).in_keys
    ro = rollout(encoder)
    nxt = ro["next"]
    end = EPISODE_LENGTH - 1
    assert nxt["episode_done"][:, end].all() and not nxt["episode_done"][:, :end].any()
    with torch.no_grad():
        args = (ro["action"][:, end], nxt["reward"][:, end], nxt["true_observation"][:, end])
        with_flag = encoder.step(*args, ro[BELIEF_HIDDEN][:, end], done=nxt["episode_done"][:, end])
        without = encoder.step(
            *args, ro[BELIEF_HIDDEN][:, end], done=torch.zeros_like(nxt["episode_done"][:, end])
        )
    torch.testing.assert_close(nxt[BELIEF_HIDDEN][:, end], with_flag[2], rtol=0, atol=0)
    assert not torch.allclose(nxt[BELIEF_HIDDEN][:, end], without[2])


def test_elbo_reencoding_reproduces_the_online_beliefs_with_the_done_input():
    encoder = make_encoder()
    ro = rollout(encoder, num_envs=3, seed=4)
    assert ("next", "episode_done") in DEFAULT_TRAJECTORY_KEYS  # stored for the re-encoding
    buffer = TrajectoryBuffer(capacity=4, horizon=HORIZON)
    assert buffer.extend_from_batch(ro) == 3
    stored = buffer.buffer.storage[:3]
    assert torch.equal(stored["next", "episode_done"], ro["next", "episode_done"])
    recording = RecordingEncoder(encoder)
    loss = ELBOLoss(recording, reward_decoder=GridCellRewardDecoder(LATENT, grid_size=5))
    assert ("next", "episode_done") in loss.in_keys
    with torch.no_grad():
        loss(stored)
    ((kwargs, (mean, logvar, hidden)),) = recording.calls
    assert torch.equal(kwargs["done"], ro["next", "episode_done"])
    nxt = ro["next"]
    # The same beliefs as online, at every step, inner-episode ends (4, 9, 14) included (the
    # one-step and the sequence GRU differ by float rounding only, as without the flag).
    torch.testing.assert_close(mean[:, 1:], nxt[BELIEF_MEAN], atol=1e-6, rtol=0)
    torch.testing.assert_close(logvar[:, 1:], nxt[BELIEF_LOGVAR], atol=1e-6, rtol=0)
    torch.testing.assert_close(hidden[:, 1:], nxt[BELIEF_HIDDEN], atol=1e-6, rtol=0)
    torch.testing.assert_close(mean[:, :-1], ro[BELIEF_MEAN], atol=1e-6, rtol=0)
    # Re-encoding without the flags would not reproduce them after the first episode end.
    with torch.no_grad():
        no_flags, _, _ = encoder.sequence(
            ro["action"],
            nxt["reward"],
            nxt["true_observation"],
            done=torch.zeros_like(nxt["episode_done"]),
        )
    assert not torch.allclose(no_flags[:, EPISODE_LENGTH + 1], nxt[BELIEF_MEAN][:, EPISODE_LENGTH])


def test_missing_done_flag_is_named():
    encoder = make_encoder()
    ro = rollout(encoder)
    loss = ELBOLoss(encoder, reward_decoder=GridCellRewardDecoder(LATENT, grid_size=5))
    with pytest.raises(KeyError, match="episode_done"):
        loss(ro.exclude(("next", "episode_done")))


def test_done_input_off_keeps_todays_beliefs():
    """Default encoder: the transform reads no flag, and a fixed-seed rollout gives the beliefs
    recorded before the option existed (bit-identical on the machine that added it; a small
    tolerance covers other CPUs' float kernels)."""
    torch.manual_seed(0)
    encoder = BeliefEncoder(obs_dim=2, action_dim=5, discrete_actions=True)
    transform = VariationalBelief(encoder)
    assert "episode_done" not in transform.in_keys
    env = TransformedEnv(
        BAMDPEnv(GridNaviEnv(num_envs=3), episode_length=5, episodes_per_task=2), transform
    )
    env.set_seed(0)
    with torch.no_grad():
        ro = env.rollout(10, break_when_any_done=False)
    first = [-0.06647253781557083, 0.12221468985080719, -0.07798005640506744, 0.07996288686990738]
    mean = ro["next", BELIEF_MEAN]
    torch.testing.assert_close(mean.flatten()[:4], torch.tensor(first), rtol=1e-5, atol=1e-6)
    assert mean.sum().item() == pytest.approx(-1.167548418045044, abs=1e-4)
