"""VariationalBelief / varibad_transforms: prior on new tasks only, online = sequence beliefs."""

from __future__ import annotations

import pytest
import torch
from tensordict import TensorDict
from torchrl.collectors import Collector
from torchrl.envs import TransformedEnv
from torchrl.envs.utils import step_mdp

from torchrl_bamdp.envs import BAMDPEnv, GridNaviEnv
from torchrl_bamdp.modules import BeliefEncoder
from torchrl_bamdp.transforms import (
    BELIEF_HIDDEN,
    BELIEF_LOGVAR,
    BELIEF_MEAN,
    VariationalBelief,
    hyper_state_transform,
    varibad_transforms,
)

EPISODE_LENGTH = 15
EPISODES = 4
HORIZON = EPISODE_LENGTH * EPISODES
LATENT = 5
HIDDEN = 16


def make_encoder(seed: int = 0) -> BeliefEncoder:
    torch.manual_seed(seed)
    return BeliefEncoder(
        obs_dim=2, action_dim=5, discrete_actions=True, latent_dim=LATENT, hidden_size=HIDDEN
    )


def make_env(num_envs: int = 3, seed: int = 0, encoder: BeliefEncoder | None = None):
    encoder = make_encoder() if encoder is None else encoder
    base = BAMDPEnv(GridNaviEnv(num_envs=num_envs), EPISODE_LENGTH, EPISODES, seed=seed)
    return TransformedEnv(base, varibad_transforms(encoder)), encoder


def assert_prior(td: TensorDict, batch: tuple[int, ...]) -> None:
    torch.testing.assert_close(td[BELIEF_MEAN], torch.zeros(*batch, LATENT), rtol=0, atol=0)
    torch.testing.assert_close(td[BELIEF_LOGVAR], torch.zeros(*batch, LATENT), rtol=0, atol=0)
    torch.testing.assert_close(td[BELIEF_HIDDEN], torch.zeros(*batch, HIDDEN), rtol=0, atol=0)


def test_reset_writes_prior_and_hyper_state():
    env, _ = make_env(3)
    td = env.reset()
    assert_prior(td, (3,))
    expected = torch.cat([td["observation"], td[BELIEF_MEAN], td[BELIEF_LOGVAR]], -1)
    assert td["hyper_state"].shape == (3, 2 + 2 * LATENT)
    torch.testing.assert_close(td["hyper_state"], expected, rtol=0, atol=0)


def test_belief_changes_and_hyper_state_matches():
    env, _ = make_env(3)
    torch.manual_seed(1)
    with torch.no_grad():
        rollout = env.rollout(30, break_when_any_done=False)
    assert_prior(rollout[:, 0], (3,))
    nxt = rollout["next"]
    assert (nxt[BELIEF_MEAN][:, 0].abs() > 0).any()
    assert (nxt[BELIEF_HIDDEN][:, 0].abs() > 0).any()
    # Successive beliefs differ (the GRU is updated every step).
    assert not torch.allclose(nxt[BELIEF_MEAN][:, 1], nxt[BELIEF_MEAN][:, 2])
    for td in (rollout, nxt):
        expected = torch.cat([td["observation"], td[BELIEF_MEAN], td[BELIEF_LOGVAR]], -1)
        torch.testing.assert_close(td["hyper_state"], expected, rtol=0, atol=0)
    # The root belief at t+1 is the next belief of step t.
    torch.testing.assert_close(rollout[BELIEF_HIDDEN][:, 1:], nxt[BELIEF_HIDDEN][:, :-1])


def test_belief_matches_one_encoder_step_each_step():
    env, encoder = make_env(2)
    torch.manual_seed(2)
    with torch.no_grad():
        rollout = env.rollout(20, break_when_any_done=False)
        for t in range(20):
            mean, logvar, hidden = encoder.step(
                rollout["action"][:, t],
                rollout["next", "reward"][:, t],
                rollout["next", "true_observation"][:, t],
                rollout[BELIEF_HIDDEN][:, t],
            )
            torch.testing.assert_close(rollout["next", *BELIEF_MEAN][:, t], mean)
            torch.testing.assert_close(rollout["next", *BELIEF_LOGVAR][:, t], logvar)
            torch.testing.assert_close(rollout["next", *BELIEF_HIDDEN][:, t], hidden)


def test_belief_not_reset_at_inner_episode_end():
    env, encoder = make_env(3)
    torch.manual_seed(3)
    with torch.no_grad():
        rollout = env.rollout(HORIZON, break_when_any_done=False)
    ep_done = rollout["next", "episode_done"][0, :, 0]
    for end in (14, 29, 44):
        assert ep_done[end]
        after = end + 1
        # The observation was reset to the start, the belief was not.
        assert rollout["observation"][:, after].eq(0).all()
        carried = rollout[BELIEF_HIDDEN][:, after]
        torch.testing.assert_close(carried, rollout["next", *BELIEF_HIDDEN][:, end])
        assert carried.abs().sum() > 0
        assert rollout[BELIEF_MEAN][:, after].abs().sum() > 0
        with torch.no_grad():
            mean, logvar, hidden = encoder.step(
                rollout["action"][:, after],
                rollout["next", "reward"][:, after],
                rollout["next", "true_observation"][:, after],
                carried,
            )
            from_prior = encoder.step(
                rollout["action"][:, after],
                rollout["next", "reward"][:, after],
                rollout["next", "true_observation"][:, after],
                encoder.initial_hidden(3),
            )
        torch.testing.assert_close(rollout["next", *BELIEF_HIDDEN][:, after], hidden)
        torch.testing.assert_close(rollout["next", *BELIEF_MEAN][:, after], mean)
        assert not torch.allclose(hidden, from_prior[2])


def test_belief_reset_to_prior_on_new_task_in_rollout():
    env, encoder = make_env(3)
    torch.manual_seed(4)
    with torch.no_grad():
        rollout = env.rollout(2 * HORIZON, break_when_any_done=False)
    assert rollout["next", "done"][:, HORIZON - 1].all()
    assert not torch.equal(rollout["task"][:, HORIZON - 1], rollout["task"][:, HORIZON])
    # Before the task switch the belief is not the prior, right after it is.
    assert rollout["next", *BELIEF_HIDDEN][:, HORIZON - 1].abs().sum() > 0
    assert_prior(rollout[:, HORIZON], (3,))
    with torch.no_grad():
        mean, logvar, hidden = encoder.step(
            rollout["action"][:, HORIZON],
            rollout["next", "reward"][:, HORIZON],
            rollout["next", "true_observation"][:, HORIZON],
            encoder.initial_hidden(3),
        )
    torch.testing.assert_close(rollout["next", *BELIEF_HIDDEN][:, HORIZON], hidden)
    torch.testing.assert_close(rollout["next", *BELIEF_MEAN][:, HORIZON], mean)
    torch.testing.assert_close(rollout["next", *BELIEF_LOGVAR][:, HORIZON], logvar)
    # The second task's beliefs equal a fresh encoding of the second task alone.
    with torch.no_grad():
        seq_mean, _, seq_hidden = encoder.sequence(
            rollout["action"][:, HORIZON:],
            rollout["next", "reward"][:, HORIZON:],
            rollout["next", "true_observation"][:, HORIZON:],
        )
    torch.testing.assert_close(rollout["next", *BELIEF_MEAN][:, HORIZON:], seq_mean[:, 1:])


def test_belief_reset_after_done_with_env_reset():
    env, _ = make_env(2)
    torch.manual_seed(5)
    with torch.no_grad():
        rollout = env.rollout(HORIZON)  # stops at the end of the BAMDP
        assert rollout.batch_size == torch.Size([2, HORIZON])
        assert rollout["next", *BELIEF_HIDDEN][:, -1].abs().sum() > 0
        td = env.reset()
    assert_prior(td, (2,))


def test_collector_new_task_gets_prior_belief():
    env, _ = make_env(2, seed=9)
    torch.manual_seed(6)
    collector = Collector(
        env,
        policy=None,
        frames_per_batch=2 * 2 * HORIZON,
        total_frames=2 * 2 * HORIZON,
        auto_register_policy_transforms=False,
    )
    try:
        batch = next(iter(collector))
    finally:
        collector.shutdown()
    assert batch.batch_size == torch.Size([2, 2 * HORIZON])
    assert_prior(batch[:, 0], (2,))
    assert_prior(batch[:, HORIZON], (2,))
    assert batch[BELIEF_HIDDEN][:, 1:HORIZON].abs().sum(-1).gt(0).all()
    assert batch[BELIEF_HIDDEN][:, HORIZON + 1 :].abs().sum(-1).gt(0).all()
    assert not batch[BELIEF_MEAN].requires_grad


def test_partial_reset_only_resets_masked_belief():
    env, _ = make_env(3)
    torch.manual_seed(7)
    with torch.no_grad():
        td = env.reset()
        for _ in range(20):
            td = step_mdp(env.rand_step(td))
        before = td.clone()
        assert before[BELIEF_HIDDEN].abs().sum(-1).gt(0).all()
        td["_reset"] = torch.tensor([[False], [True], [False]])
        out = env.reset(td)
    assert_prior(out[1:2], (1,))
    for key in (BELIEF_MEAN, BELIEF_LOGVAR, BELIEF_HIDDEN):
        torch.testing.assert_close(out[key][[0, 2]], before[key][[0, 2]], rtol=0, atol=0)
    torch.testing.assert_close(out["observation"][[0, 2]], before["observation"][[0, 2]])
    torch.testing.assert_close(out["observation"][1], torch.zeros(2))
    expected = torch.cat([out["observation"], out[BELIEF_MEAN], out[BELIEF_LOGVAR]], -1)
    torch.testing.assert_close(out["hyper_state"], expected, rtol=0, atol=0)


def test_online_beliefs_equal_encoder_sequence():
    env, encoder = make_env(4, seed=2)
    torch.manual_seed(8)
    with torch.no_grad():
        rollout = env.rollout(HORIZON, break_when_any_done=False)
        mean, logvar, hidden = encoder.sequence(
            rollout["action"], rollout["next", "reward"], rollout["next", "true_observation"]
        )
    assert mean.shape == (4, HORIZON + 1, LATENT)
    assert hidden.shape == (4, HORIZON + 1, HIDDEN)
    # Index 0 is the prior, which is also the belief written at reset.
    torch.testing.assert_close(mean[:, 0], torch.zeros(4, LATENT), rtol=0, atol=0)
    torch.testing.assert_close(logvar[:, 0], torch.zeros(4, LATENT), rtol=0, atol=0)
    torch.testing.assert_close(hidden[:, 0], rollout[BELIEF_HIDDEN][:, 0], rtol=0, atol=0)
    nxt = rollout["next"]
    torch.testing.assert_close(mean[:, 1:], nxt[BELIEF_MEAN], atol=1e-6, rtol=0)
    torch.testing.assert_close(logvar[:, 1:], nxt[BELIEF_LOGVAR], atol=1e-6, rtol=0)
    torch.testing.assert_close(hidden[:, 1:], nxt[BELIEF_HIDDEN], atol=1e-6, rtol=0)
    # ... and the root beliefs (what the policy sees) are the sequence shifted by one.
    torch.testing.assert_close(mean[:, :-1], rollout[BELIEF_MEAN], atol=1e-6, rtol=0)


def test_no_gradients_by_default_and_optional_tracking():
    encoder = make_encoder()
    base = BAMDPEnv(GridNaviEnv(num_envs=2), EPISODE_LENGTH, EPISODES, seed=0)
    env = TransformedEnv(base, VariationalBelief(encoder))
    td = env.rand_step(env.reset())
    assert not td["next", *BELIEF_MEAN].requires_grad
    tracked = TransformedEnv(
        BAMDPEnv(GridNaviEnv(num_envs=2), EPISODE_LENGTH, EPISODES, seed=0),
        VariationalBelief(encoder, track_gradients=True),
    )
    td = tracked.rand_step(tracked.reset())
    mean = td["next", *BELIEF_MEAN]
    assert mean.requires_grad
    mean.sum().backward()
    assert encoder.mean_head.weight.grad is not None
    assert encoder.mean_head.weight.grad.abs().sum() > 0


def test_step_without_belief_raises():
    env, _ = make_env(2)
    td = env.reset().exclude("belief")
    td["action"] = torch.zeros(2, dtype=torch.long)
    with pytest.raises(KeyError, match="belief"):
        env.step(td)


def test_transform_forward_is_not_supported():
    transform = VariationalBelief(make_encoder())
    with pytest.raises(NotImplementedError):
        transform(TensorDict({}, batch_size=[]))


def test_hyper_state_transform_and_compose():
    t = hyper_state_transform()
    assert t.out_keys == ["hyper_state"]
    td = TensorDict(
        {
            "observation": torch.tensor([[1.0, 2.0]]),
            "belief": {"mean": torch.tensor([[3.0]]), "logvar": torch.tensor([[4.0]])},
        },
        batch_size=[1],
    )
    out = t(td)
    torch.testing.assert_close(out["hyper_state"], torch.tensor([[1.0, 2.0, 3.0, 4.0]]))
    assert "observation" in list(out.keys())  # not deleted
    composed = varibad_transforms(make_encoder())
    assert isinstance(composed[0], VariationalBelief)
    assert composed[1].out_keys == ["hyper_state"]


def test_transformed_env_leaves_the_shared_encoder_in_training_mode():
    # TorchRL puts a transform in eval mode when a TransformedEnv takes it; the encoder is the
    # ELBO's, and cuDNN refuses the backward pass of a GRU in eval mode.
    env, encoder = make_env()
    belief = env.transform[0]
    assert isinstance(belief, VariationalBelief)
    assert not belief.training
    assert all(module.training for module in encoder.modules())
    belief.eval()
    env.eval()
    assert all(module.training for module in encoder.modules())
    encoder.eval()  # the owner still sets it
    assert not any(module.training for module in encoder.modules())


# -- the true terminal observation ---------------------------------------------------------------
#: GridNavi, goal (0, 4): 11 noops then 4 ups land on the goal on step 14, the LAST step of
#: inner episode 1 (and of every later one).
LAST_STEP_GOAL = (0.0, 4.0)
LAST_STEP_ACTIONS = [0] * 11 + [1] * 4


class RecordingEncoder(torch.nn.Module):
    """Delegates to a real encoder and records the beliefs its ``sequence`` returns."""

    def __init__(self, inner: BeliefEncoder) -> None:
        super().__init__()
        self.inner = inner
        self.latent_dim = inner.latent_dim
        self.sequences = []

    def sequence(self, *args, **kwargs):
        out = self.inner.sequence(*args, **kwargs)
        self.sequences.append(out)
        return out


def last_step_goal_rollout(num_envs: int = 2):
    encoder = make_encoder(seed=3)
    base = BAMDPEnv(
        GridNaviEnv(num_envs=num_envs),
        EPISODE_LENGTH,
        EPISODES,
        fixed_tasks=torch.tensor([LAST_STEP_GOAL] * num_envs),
    )
    env = TransformedEnv(base, varibad_transforms(encoder))
    actions = torch.tensor(LAST_STEP_ACTIONS * EPISODES).expand(num_envs, HORIZON)
    calls = {"t": 0}

    def policy(td):
        td["action"] = actions[:, calls["t"]].clone()
        calls["t"] += 1
        return td

    with torch.no_grad():
        rollout = env.rollout(HORIZON, policy, break_when_any_done=False)
    return rollout, encoder


def test_goal_reached_on_the_last_step_of_an_episode_reaches_the_encoder():
    rollout, encoder = last_step_goal_rollout()
    end = EPISODE_LENGTH - 1
    nxt = rollout["next"]
    assert nxt["episode_done"][:, end].all() and not nxt["done"][:, end].any()
    assert (nxt["reward"][:, end] == 1.0).all() and (nxt["reward"][:, :end] < 0).all()
    # The policy acts on the start state; the encoder input is the goal cell, not (0, 0).
    assert nxt["observation"][:, end].eq(0).all()
    goal = torch.tensor([LAST_STEP_GOAL] * 2)
    torch.testing.assert_close(nxt["true_observation"][:, end], goal, rtol=0, atol=0)
    with torch.no_grad():
        at_goal = encoder.step(
            rollout["action"][:, end], nxt["reward"][:, end], goal, rollout[BELIEF_HIDDEN][:, end]
        )
        at_start = encoder.step(
            rollout["action"][:, end],
            nxt["reward"][:, end],
            torch.zeros(2, 2),
            rollout[BELIEF_HIDDEN][:, end],
        )
    torch.testing.assert_close(nxt[BELIEF_HIDDEN][:, end], at_goal[2], rtol=0, atol=0)
    assert not torch.allclose(nxt[BELIEF_HIDDEN][:, end], at_start[2])
    # The next step starts from the start state with the belief carried over.
    assert rollout["observation"][:, end + 1].eq(0).all()
    torch.testing.assert_close(rollout[BELIEF_MEAN][:, end + 1], nxt[BELIEF_MEAN][:, end])


def test_elbo_reencoding_of_stored_tasks_equals_online_beliefs_across_episode_ends():
    """Collected -> TrajectoryBuffer (default keys) -> ELBOLoss re-encodes the very beliefs the
    policy saw, including the steps that end an inner episode on the goal."""
    from torchrl_bamdp.data import TrajectoryBuffer
    from torchrl_bamdp.modules import GridCellRewardDecoder
    from torchrl_bamdp.objectives import ELBOLoss

    rollout, encoder = last_step_goal_rollout()
    buffer = TrajectoryBuffer(
        capacity=4, horizon=HORIZON, generator=torch.Generator().manual_seed(0)
    )
    assert buffer.extend_from_batch(rollout) == 2
    stored = buffer.buffer.storage[:2]
    assert "observation" not in stored["next"]  # the reset obs is not the encoder's
    recording = RecordingEncoder(encoder)
    loss = ELBOLoss(recording, reward_decoder=GridCellRewardDecoder(LATENT, grid_size=5))
    with torch.no_grad():
        loss(stored)
    mean, logvar, hidden = recording.sequences[0]
    nxt = rollout["next"]
    torch.testing.assert_close(mean[:, 1:], nxt[BELIEF_MEAN], atol=1e-6, rtol=0)
    torch.testing.assert_close(logvar[:, 1:], nxt[BELIEF_LOGVAR], atol=1e-6, rtol=0)
    torch.testing.assert_close(hidden[:, 1:], nxt[BELIEF_HIDDEN], atol=1e-6, rtol=0)
    # Across every inner-episode end (steps 14, 29, 44) as well.
    for end in (14, 29, 44):
        torch.testing.assert_close(
            mean[:, end + 1], rollout[BELIEF_MEAN][:, end + 1], atol=1e-6, rtol=0
        )
