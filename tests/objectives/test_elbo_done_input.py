"""The decoders' inner-episode-done input (``algo.decoders.done_input``, the original's states
with ``add_done_info``): the MSE reward decoder reads s_{t+1} and s_t each with its flag, the
state decoder reads s_t with its flag and predicts s_{t+1} with its flag (issue 17)."""

from __future__ import annotations

import pytest
import torch
from test_elbo import StubEncoder, make_td

from torchrl_bamdp.cli import compose_config
from torchrl_bamdp.envs import make_env_from_config
from torchrl_bamdp.modules import RewardDecoder, StateDecoder
from torchrl_bamdp.modules.decoders import TransitionBatch
from torchrl_bamdp.objectives import ELBOLoss
from torchrl_bamdp.trainers.agents import build_agent


def ends(td, where):
    """Mark inner-episode ends (the true next state stays what it was)."""
    for i, j in where:
        td["next", "episode_done"][i, j] = True
    return td


def test_state_decoder_predicts_the_flag_too_by_hand():
    n, t, latent = 2, 4, 2
    stub = StubEncoder(torch.zeros(n, t + 1, latent), torch.full((n, t + 1, latent), -30.0))
    dec = StateDecoder(latent, 2, 5, hidden=(), discrete_actions=True, done_input=True)
    assert dec.net[0].in_features == latent + 3 + 5 and dec.net[0].out_features == 3
    with torch.no_grad():  # prediction: (s_t with its flag) + 0 -> the constant bias
        dec.net[0].weight.zero_()
        dec.net[0].bias.copy_(torch.tensor([1.0, -2.0, 0.5]))
    td = ends(make_td(n, t, seed=3), [(0, 1), (1, 2)])
    out = ELBOLoss(stub, state_decoder=dec)(td)
    total = 0.0
    for i in range(n):
        for j in range(t):
            x, y = td["next", "true_observation"][i, j].tolist()
            d = float(td["next", "episode_done"][i, j])
            err = (1.0 - x) ** 2 + (-2.0 - y) ** 2 + (0.5 - d) ** 2
            total += (t + 1) * err  # every ELBO step decodes every transition
    assert out["loss_state"].item() == pytest.approx(total / n, rel=1e-5)


def test_reward_decoder_reads_each_state_with_its_flag():
    n, t, latent = 1, 4, 1
    g = torch.Generator().manual_seed(0)
    mean = torch.zeros(n, t + 1, latent)
    stub = StubEncoder(mean, torch.full((n, t + 1, latent), -30.0))
    dec = RewardDecoder(
        latent, 2, 5, hidden=(), discrete_actions=True, use_action=False, done_input=True
    )
    # [m, s_{t+1}, d_{t+1}, s_t, d_t]
    assert dec.net[0].in_features == 1 + 3 + 3
    with torch.no_grad():  # prediction = 10 d_{t+1} + 100 d_t
        dec.net[0].weight.copy_(torch.tensor([[0.0, 0.0, 0.0, 10.0, 0.0, 0.0, 100.0]]))
        dec.net[0].bias.zero_()
    td = ends(make_td(n, t, seed=1), [(0, 1)])
    td["next", "reward"] = torch.randn(n, t, 1, generator=g)
    out = ELBOLoss(stub, reward_decoder=dec)(td)
    # d_{t+1} = [0, 1, 0, 0]; d_t = [0 (task start), 0, 1, 0]
    prediction = torch.tensor([0.0, 10.0, 100.0, 0.0])
    expected = (t + 1) * ((prediction - td["next", "reward"][0, :, 0]) ** 2).sum()
    assert out["loss_reward"].item() == pytest.approx(expected.item(), rel=1e-5)


def test_a_done_input_decoder_needs_the_flags():
    dec = RewardDecoder(1, 2, 5, discrete_actions=True, done_input=True)
    batch = TransitionBatch(
        torch.zeros(1, 3, 2),
        torch.zeros(1, 3, dtype=torch.long),
        torch.zeros(1, 3, 2),
        torch.zeros(1, 3, 1),
    )
    with pytest.raises(ValueError, match="built with done_input=True, but the batch has no"):
        dec.nll(torch.zeros(1, 2, 1), batch)


def test_varibad_original_decoders_read_the_flag_and_ours_do_not():
    original = compose_config(["algo=varibad_original", "env=cheetah_vel", "env.num_envs=2"])
    ours = compose_config(["env=cheetah_vel", "env.num_envs=2"])
    assert original.algo.decoders.done_input and not ours.algo.decoders.done_input
    for config, extra in ((original, 1), (ours, 0)):
        env = make_env_from_config(config.env, seed=0)
        try:
            decoder = build_agent(config, env).elbo_loss.reward_decoder
        finally:
            env.close()
        obs_dim = env.observation_spec["observation"].shape[-1]
        assert decoder.done_input == bool(extra)
        if extra:  # the original embeds each state (with its flag) before the MLP
            assert decoder.obs_encoder.in_features == obs_dim + 1
        else:
            latent, actions = config.algo.encoder.latent_dim, env.action_spec.shape[-1]
            width = latent + obs_dim * (1 + decoder.use_obs) + actions * decoder.use_action
            assert decoder.net[0].in_features == width
