"""SamplingPolicy acts exactly as the PPO actor; add_log_probs gives the actor's log-probs."""

from __future__ import annotations

import pytest
import torch
from tensordict import TensorDict
from torchrl.data import Bounded, Categorical
from torchrl.envs.utils import ExplorationType, set_exploration_type

from torchrl_bamdp.modules.actor_critic import (
    SamplingPolicy,
    add_log_probs,
    find_input_normalizers,
    make_actor_critic,
)

SPECS = {
    "discrete": Categorical(5, shape=(8,)),
    "continuous": Bounded(-torch.ones(8, 3) * 2, torch.ones(8, 3) * 0.5, shape=(8, 3)),
}


def _actor(kind: str):
    torch.manual_seed(0)
    actor, _ = make_actor_critic(6, SPECS[kind], hidden=[16, 16])
    # Move the input normaliser and the (near-zero) last layer away from their initial values.
    (normalizer,) = find_input_normalizers(actor)
    normalizer.update(torch.randn(50, 6) * 3 + 1)
    with torch.no_grad():
        for p in actor.parameters():
            p.add_(torch.randn_like(p) * 0.3)
    return actor


@pytest.mark.parametrize("kind", sorted(SPECS))
@pytest.mark.parametrize("mode", [ExplorationType.RANDOM, ExplorationType.DETERMINISTIC])
def test_sampling_policy_draws_the_actors_actions(kind, mode):
    actor = _actor(kind)
    policy = SamplingPolicy(actor)
    td = TensorDict({"hyper_state": torch.randn(8, 6)}, [8])
    with torch.no_grad(), set_exploration_type(mode):
        torch.manual_seed(1)
        expected = actor(td.clone())
        torch.manual_seed(1)
        got = policy(td.clone())
    assert torch.equal(got["action"], expected["action"])
    assert set(got.keys()) == {"hyper_state", "action"}
    if kind == "continuous":  # within the spec's bounds
        assert SPECS[kind].is_in(got["action"])


@pytest.mark.parametrize("kind", sorted(SPECS))
def test_add_log_probs_matches_the_actor_step_by_step(kind):
    actor = _actor(kind)
    steps = []
    with torch.no_grad(), set_exploration_type(ExplorationType.RANDOM):
        for _ in range(5):
            steps.append(actor(TensorDict({"hyper_state": torch.randn(8, 6)}, [8])))
    batch = torch.stack(steps, dim=1)  # [8 envs, 5 steps], as a collector stacks them
    expected = batch["action_log_prob"].clone()
    del batch["action_log_prob"]
    add_log_probs(actor, batch)
    assert batch["action_log_prob"].shape == expected.shape == (8, 5)
    # The actor scores its sample from the pre-tanh value; recomputing from the stored (float32)
    # action goes through atanh, as ClipPPOLoss does: equal up to float rounding near the bounds.
    torch.testing.assert_close(batch["action_log_prob"], expected, rtol=1e-4, atol=1e-4)


def test_sampling_policy_shares_the_actors_parameters():
    actor = _actor("continuous")
    policy = SamplingPolicy(actor)
    assert {id(p) for p in policy.parameters()} == {id(p) for p in actor.parameters()}


def test_privileged_critic_reads_the_task_through_its_own_normaliser_the_actor_does_not():
    torch.manual_seed(0)
    actor, critic = make_actor_critic(6, SPECS["discrete"], hidden=[16], critic_extra={"task": 2})
    assert critic.in_keys == ["hyper_state", "task"]
    assert "task" not in actor.in_keys
    (hyper_norm,) = find_input_normalizers(actor)
    shared, task_norm = find_input_normalizers(critic)
    assert shared is hyper_norm and (hyper_norm.key, task_norm.key) == ("hyper_state", "task")

    hyper_state, task = torch.randn(8, 6), torch.rand(8, 2) * 4
    td = TensorDict({"hyper_state": hyper_state, "task": task}, [8])
    with torch.no_grad():
        logits = actor(td.clone())["logits"]
        other_task = actor(td.clone().set("task", task + 1))["logits"]
        value = critic(td.clone())["state_value"]
        value_other_task = critic(td.clone().set("task", task + 1))["state_value"]
    assert torch.equal(logits, other_task)  # the policy never reads the task
    assert not torch.allclose(value, value_other_task)

    # After an update the critic sees the task standardised by the tracked statistics.
    seen = torch.tensor([[0.0, 1.0], [2.0, 3.0], [4.0, 5.0]])
    task_norm.update(seen)
    mean, std = seen.mean(0), seen.var(0, unbiased=False).sqrt()
    with torch.no_grad():
        normalised = critic(td.clone())["state_value"]
        task_norm.count.zero_()  # identity again: feed the standardised task by hand
        expected = critic(td.clone().set("task", (task - mean) / std))["state_value"]
    torch.testing.assert_close(normalised, expected)
