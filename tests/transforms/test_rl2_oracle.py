"""RL2Memory (hidden state across inner episodes, reset per task) and the oracle's hyper-state."""

from __future__ import annotations

import pytest
import torch
from torchrl.envs import TransformedEnv
from torchrl.envs.utils import check_env_specs

from torchrl_bamdp.envs import BAMDPEnv, GridNaviEnv
from torchrl_bamdp.modules import BeliefEncoder
from torchrl_bamdp.transforms import RL2_HIDDEN, RL2Memory, oracle_transforms, rl2_transforms

EPISODE_LENGTH, EPISODES = 5, 3
HORIZON = EPISODE_LENGTH * EPISODES
HIDDEN = 8


def make_rl2_env(num_envs: int = 3, seed: int = 0):
    torch.manual_seed(seed)
    gru = BeliefEncoder(
        obs_dim=3, action_dim=5, discrete_actions=True, hidden_size=HIDDEN, action_embed=4
    )
    base = BAMDPEnv(GridNaviEnv(num_envs=num_envs), EPISODE_LENGTH, EPISODES, seed=seed)
    return TransformedEnv(base, rl2_transforms(gru)), gru


def test_rl2_env_specs():
    env, _ = make_rl2_env()
    check_env_specs(env)
    td = env.reset()
    assert td["hyper_state"].shape == (3, 2 + HIDDEN)
    assert torch.equal(td[RL2_HIDDEN], torch.zeros(3, HIDDEN))


def test_rl2_memory_persists_across_inner_episodes_and_resets_on_new_task():
    env, _ = make_rl2_env(num_envs=2)
    with torch.no_grad():
        rollout = env.rollout(2 * HORIZON, break_when_any_done=False)
    hidden = rollout[RL2_HIDDEN]  # the memory the policy saw at each step
    episode_done = rollout["next", "episode_done"][0, :, 0]
    # zero only at the start of each task (steps 0 and HORIZON), never at inner-episode starts
    zero = (hidden.abs().sum(-1) == 0)[0]
    assert zero.nonzero().flatten().tolist() == [0, HORIZON]
    inner_starts = [t + 1 for t in episode_done.nonzero().flatten().tolist() if t + 1 < 2 * HORIZON]
    assert any(t % HORIZON for t in inner_starts)  # there are inner starts inside a task
    for t in inner_starts:
        if t % HORIZON:
            assert hidden[0, t].abs().sum() > 0
    # the hyper-state carries the memory
    assert torch.equal(rollout["hyper_state"][..., 2:], hidden)


def test_rl2_reencoding_equals_online_memory_and_has_gradients():
    env, gru = make_rl2_env(num_envs=3, seed=1)
    with torch.no_grad():
        rollout = env.rollout(HORIZON, break_when_any_done=False)
    memory = RL2Memory(gru)
    hidden = memory.encode_sequence(rollout)
    torch.testing.assert_close(hidden, rollout[RL2_HIDDEN], atol=1e-5, rtol=1e-5)
    assert hidden.requires_grad
    hidden.sum().backward()
    assert gru.gru.weight_hh_l0.grad is not None


def test_rl2_reads_the_done_flag():
    """The same transitions with and without an inner-episode end give different memories."""
    _, gru = make_rl2_env()
    memory = RL2Memory(gru)
    obs, action, reward = torch.zeros(1, 2), torch.zeros(1, dtype=torch.long), torch.zeros(1, 1)
    hidden = gru.initial_hidden(1)
    outs = []
    for done in (False, True):
        flag = torch.tensor([[done]])
        _, _, h = gru.step(action, reward, memory.encoder_observation(obs, flag), hidden)
        outs.append(h)
    assert not torch.allclose(outs[0], outs[1])


def test_rl2_needs_reset_state():
    env, _ = make_rl2_env()
    td = env.reset()
    del td[RL2_HIDDEN]
    td["action"] = torch.zeros(3, dtype=torch.long)
    with pytest.raises(KeyError, match="rl2"):
        env.step(td)


def test_oracle_hyper_state_is_observation_and_task():
    base = BAMDPEnv(GridNaviEnv(num_envs=4), EPISODE_LENGTH, EPISODES, seed=0)
    env = TransformedEnv(base, oracle_transforms())
    check_env_specs(env)
    rollout = env.rollout(HORIZON, break_when_any_done=False)
    torch.testing.assert_close(rollout["hyper_state"][..., :2], rollout["observation"])
    torch.testing.assert_close(rollout["hyper_state"][..., 2:], rollout["task"])
    # the task is constant within a task and differs across envs
    assert torch.equal(rollout["task"][:, 0], rollout["task"][:, -1])


def test_rl2_env_leaves_the_memory_in_training_mode():
    env, gru = make_rl2_env()
    memory = env.transform[0]
    assert isinstance(memory, RL2Memory) and not memory.training
    env.eval()
    assert all(module.training for module in gru.modules())


def test_rl2_gru_reads_the_true_last_state_at_inner_episode_ends():
    env, gru = make_rl2_env(num_envs=4, seed=2)
    torch.manual_seed(2)
    with torch.no_grad():
        rollout = env.rollout(HORIZON, break_when_any_done=False)
    nxt = rollout["next"]
    memory = RL2Memory(gru)
    for end in (EPISODE_LENGTH - 1, 2 * EPISODE_LENGTH - 1):
        assert nxt["episode_done"][:, end].all() and nxt["observation"][:, end].eq(0).all()
        assert (nxt["true_observation"][:, end] != 0).any()  # the two differ somewhere
        with torch.no_grad():
            _, _, hidden = gru.step(
                rollout["action"][:, end],
                nxt["reward"][:, end],
                memory.encoder_observation(
                    nxt["true_observation"][:, end], nxt["episode_done"][:, end]
                ),
                rollout[RL2_HIDDEN][:, end],
            )
        torch.testing.assert_close(nxt[RL2_HIDDEN][:, end], hidden, rtol=0, atol=0)
    # Re-encoding for PPO reads the same inputs: equal to the online memory across the ends.
    torch.testing.assert_close(
        memory.encode_sequence(rollout), rollout[RL2_HIDDEN], atol=1e-5, rtol=1e-5
    )
