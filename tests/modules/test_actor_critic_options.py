"""make_actor_critic's options for the original's policy: Gaussian with a state-independent std
(continuous_dist="gaussian") and per-part input embeddings (input_embeddings); defaults unchanged.
"""

from __future__ import annotations

import math

import pytest
import torch
from tensordict import TensorDict
from torchrl.data import Bounded, Categorical
from torchrl.envs.utils import ExplorationType, set_exploration_type
from torchrl.objectives import ClipPPOLoss

from torchrl_bamdp.modules.actor_critic import (
    InputEmbeddings,
    SamplingPolicy,
    add_log_probs,
    find_input_normalizers,
    make_actor_critic,
    unique_parameters,
)

CONTINUOUS = Bounded(-torch.ones(8, 3) * 2, torch.ones(8, 3) * 0.5, shape=(8, 3))
DISCRETE = Categorical(5, shape=(8,))


def _perturbed(actor, critic=None):
    """Move the normaliser and the near-zero last layer away from their initial values."""
    (normalizer,) = find_input_normalizers(actor)
    normalizer.update(torch.randn(50, normalizer.mean.shape[0]) * 3 + 1)
    with torch.no_grad():
        for p in unique_parameters(actor, *([critic] if critic is not None else [])):
            p.add_(torch.randn_like(p) * 0.3)
    return actor


def _gaussian(**kwargs):
    torch.manual_seed(0)
    actor, critic = make_actor_critic(
        6, CONTINUOUS, hidden=[16, 16], continuous_dist="gaussian", **kwargs
    )
    return _perturbed(actor, critic), critic


# --- continuous_dist="gaussian" ---------------------------------------------------------------


def test_gaussian_log_prob_is_the_diagonal_normal_of_torch_distributions():
    actor, _ = _gaussian()
    with torch.no_grad():
        actor.module[0].module[1].state_independent_scale.copy_(
            torch.log(torch.tensor([0.5, 1.0, 2.0]))
        )
    td = TensorDict({"hyper_state": torch.randn(8, 6)}, [8])
    with torch.no_grad(), set_exploration_type(ExplorationType.RANDOM):
        out = actor(td)
    loc, scale, action = out["loc"], out["scale"], out["action"]
    assert torch.equal(scale, torch.tensor([0.5, 1.0, 2.0]).expand(8, 3))
    expected = torch.distributions.Normal(loc, scale).log_prob(action).sum(-1)
    torch.testing.assert_close(out["action_log_prob"], expected)
    # By hand for one entry: -sum_i [(a_i - mu_i)^2 / (2 s_i^2) + log s_i + log(2 pi) / 2].
    a, mu, s = action[0].double(), loc[0].double(), scale[0].double()
    by_hand = -(((a - mu) ** 2) / (2 * s**2) + s.log() + 0.5 * math.log(2 * math.pi)).sum()
    assert out["action_log_prob"][0].item() == pytest.approx(by_hand.item(), rel=1e-6)


def test_gaussian_std_is_one_at_init_independent_of_the_input_and_learned():
    torch.manual_seed(0)
    actor, _ = make_actor_critic(6, CONTINUOUS, continuous_dist="gaussian")
    scales = []
    for scale_input in (0.0, 1.0, 100.0):
        td = TensorDict({"hyper_state": torch.full((8, 6), scale_input)}, [8])
        scales.append(actor(td)["scale"])
    for scale in scales:
        assert torch.equal(scale, torch.ones(8, 3))
    (log_std,) = [p for n, p in actor.named_parameters() if "state_independent_scale" in n]
    assert log_std.shape == (3,) and torch.equal(log_std, torch.zeros(3))  # log(init_std = 1)
    td = TensorDict({"hyper_state": torch.randn(8, 6)}, [8])
    actor(td)["action_log_prob"].sum().backward()
    assert log_std.grad is not None and log_std.grad.abs().sum() > 0
    torch.manual_seed(0)
    other, _ = make_actor_critic(6, CONTINUOUS, continuous_dist="gaussian", init_std=0.3)
    assert torch.allclose(other(td)["scale"], torch.full((8, 3), 0.3))


def test_gaussian_std_has_the_originals_lower_bound():
    actor, _ = _gaussian()
    with torch.no_grad():
        actor.module[0].module[1].state_independent_scale.fill_(-50.0)
    scale = actor(TensorDict({"hyper_state": torch.randn(8, 6)}, [8]))["scale"]
    assert torch.equal(scale, torch.full((8, 3), 1e-6))


@pytest.mark.parametrize("mode", [ExplorationType.RANDOM, ExplorationType.DETERMINISTIC])
def test_gaussian_sampling_policy_draws_the_actors_actions(mode):
    actor, _ = _gaussian()
    policy = SamplingPolicy(actor)
    td = TensorDict({"hyper_state": torch.randn(8, 6)}, [8])
    with torch.no_grad(), set_exploration_type(mode):
        torch.manual_seed(1)
        expected = actor(td.clone())
        torch.manual_seed(1)
        got = policy(td.clone())
    assert torch.equal(got["action"], expected["action"])
    if mode == ExplorationType.DETERMINISTIC:  # greedy evaluation acts with the mean
        assert torch.equal(got["action"], expected["loc"])


def test_gaussian_actions_are_not_squashed_into_the_spec():
    torch.manual_seed(0)
    actor, _ = make_actor_critic(6, CONTINUOUS, continuous_dist="gaussian", init_std=3.0)
    td = TensorDict({"hyper_state": torch.randn(8, 6)}, [8])
    with torch.no_grad(), set_exploration_type(ExplorationType.RANDOM):
        actions = torch.stack([SamplingPolicy(actor)(td.clone())["action"] for _ in range(20)])
    assert (actions > 0.5).any() and (actions < -2.0).any()  # beyond both bounds: no tanh


def test_gaussian_add_log_probs_matches_the_actor_exactly():
    actor, _ = _gaussian()
    with torch.no_grad(), set_exploration_type(ExplorationType.RANDOM):
        batch = torch.stack(
            [actor(TensorDict({"hyper_state": torch.randn(8, 6)}, [8])) for _ in range(5)], 1
        )
    expected = batch["action_log_prob"].clone()
    del batch["action_log_prob"]
    add_log_probs(actor, batch)
    # No atanh on the way back (unlike TanhNormal): the same numbers.
    torch.testing.assert_close(batch["action_log_prob"], expected, rtol=1e-6, atol=1e-6)


def test_gaussian_trains_with_clip_ppo_loss():
    actor, critic = _gaussian(input_embeddings={"observation": (2, 4), "belief": (4, 4)})
    with torch.no_grad(), set_exploration_type(ExplorationType.RANDOM):
        batch = actor(TensorDict({"hyper_state": torch.randn(8, 6)}, [8]))
    batch.set("advantage", torch.randn(8, 1))
    batch.set("value_target", torch.randn(8, 1))
    loss = ClipPPOLoss(actor, critic, normalize_advantage=False)
    out = loss(batch)
    assert out["loss_objective"].isfinite() and out["entropy"].isfinite()
    # Entropy of the diagonal Gaussian: sum_i (1/2) log(2 pi e s_i^2), as torch's Normal.
    scale = actor(batch.clone())["scale"]
    expected_entropy = torch.distributions.Normal(torch.zeros_like(scale), scale).entropy().sum(-1)
    torch.testing.assert_close(out["entropy"], expected_entropy.mean())
    sum(v for k, v in out.items() if k.startswith("loss_")).backward()
    log_std = actor.module[0].module[1].state_independent_scale
    assert log_std.grad is not None and log_std.grad.abs().sum() > 0
    # The shared embeddings get gradients from both the policy and the value loss.
    emb = actor.module[0].module[0].embedding.embeddings["observation"][0].weight
    assert emb is critic.module.embedding.embeddings["observation"][0].weight
    assert emb.grad is not None and emb.grad.abs().sum() > 0


def test_continuous_dist_and_init_std_are_validated():
    with pytest.raises(
        ValueError, match=r"continuous_dist must be one of \('tanh_normal', 'gaussian'\)"
    ):
        make_actor_critic(6, CONTINUOUS, continuous_dist="beta")
    for bad in (0.0, -1.0, float("nan"), float("inf")):
        with pytest.raises(ValueError, match="init_std must be a finite float > 0"):
            make_actor_critic(6, CONTINUOUS, continuous_dist="gaussian", init_std=bad)


def test_discrete_actions_ignore_continuous_dist():
    torch.manual_seed(0)
    a, _ = make_actor_critic(6, DISCRETE, continuous_dist="gaussian")
    torch.manual_seed(0)
    b, _ = make_actor_critic(6, DISCRETE)
    assert all(
        torch.equal(x, y)
        for x, y in zip(a.state_dict().values(), b.state_dict().values(), strict=True)
    )


# --- input_embeddings -------------------------------------------------------------------------


def test_input_embeddings_by_hand():
    torch.manual_seed(0)
    emb = InputEmbeddings(
        {"observation": (2, 3), "belief": (4, 2), "time": (2, 0)}, activation="tanh"
    )
    assert (emb.in_dim, emb.out_dim) == (8, 7)
    assert sorted(emb.embeddings) == ["belief", "observation"]  # width 0: no layer
    x = torch.randn(5, 8)
    obs_layer, belief_layer = emb.embeddings["observation"][0], emb.embeddings["belief"][0]
    expected = torch.cat(
        [
            torch.tanh(x[:, :2] @ obs_layer.weight.T + obs_layer.bias),
            torch.tanh(x[:, 2:6] @ belief_layer.weight.T + belief_layer.bias),
            x[:, 6:],  # passed through unchanged
        ],
        -1,
    )
    torch.testing.assert_close(emb(x), expected)
    with pytest.raises(ValueError, match="input has 7 features"):
        emb(torch.randn(5, 7))


@pytest.mark.parametrize("spec", [DISCRETE, CONTINUOUS], ids=["discrete", "continuous"])
def test_input_embeddings_feed_both_networks_after_the_normaliser(spec):
    torch.manual_seed(0)
    segments = {"observation": (2, 16), "belief": (4, 16)}
    actor, critic = make_actor_critic(6, spec, hidden=[8], input_embeddings=segments)
    _perturbed(actor, critic)
    actor_net = actor.module[0].module
    actor_net = actor_net if not isinstance(actor_net, torch.nn.Sequential) else actor_net[0]
    critic_net = critic.module
    assert actor_net.embedding is critic_net.embedding  # shared, as the original's
    assert actor_net.net[0].in_features == critic_net.net[0].in_features == 32
    (norm,) = find_input_normalizers(actor)
    x = torch.randn(8, 6)
    with torch.no_grad():
        z = norm(x)
        expected_value = critic_net.net(critic_net.embedding(z))
        value = critic(TensorDict({"hyper_state": x}, [8]))["state_value"]
        expected_head = actor_net.net(actor_net.embedding(z))
        head = actor_net(x)
    torch.testing.assert_close(value, expected_value)
    torch.testing.assert_close(head, expected_head)
    # Actor and critic list the embedding once between them.
    names = {id(p) for p in actor_net.embedding.parameters()}
    unique = unique_parameters(actor, critic)
    assert len(unique) == len({id(p) for p in unique})
    assert names <= {id(p) for p in unique}


def test_input_embeddings_with_a_privileged_critic_append_the_task_unembedded():
    torch.manual_seed(0)
    actor, critic = make_actor_critic(
        6, DISCRETE, hidden=[8], critic_extra={"task": 2}, input_embeddings={"all": (6, 5)}
    )
    assert critic.module.net[0].in_features == 5 + 2
    td = TensorDict({"hyper_state": torch.randn(8, 6), "task": torch.randn(8, 2)}, [8])
    assert critic(td)["state_value"].shape == (8, 1)


@pytest.mark.parametrize(
    ("segments", "message"),
    [
        ({"observation": (2, 16)}, "add up to 2, not input_dim=6"),
        ({}, "input_embeddings must be None or a mapping"),
        ([(2, 16), (4, 16)], "input_embeddings must be None or a mapping"),
        ({"observation": (2, 16), "belief": (4, -1)}, "input_embeddings must be None"),
        ({"observation": (0, 16), "belief": (6, 16)}, "input_embeddings must be None"),
        ({"obs.x": (2, 16), "belief": (4, 16)}, "names must be identifiers"),
        ({"observation": (2, 16, 3), "belief": (4, 16)}, "input_embeddings must be None"),
        ({"observation": (2.0, 16), "belief": (4, 16)}, "input_embeddings must be None"),
    ],
)
def test_input_embeddings_are_validated(segments, message):
    with pytest.raises(ValueError, match=message):
        make_actor_critic(6, DISCRETE, input_embeddings=segments)


# --- defaults: today's networks exactly --------------------------------------------------------

#: Parameter names and shapes of today's networks (checkpoints written before the options load).
DEFAULT_ACTOR_STATE = {
    "discrete": {
        "module.0.module.normalizer.mean": (6,),
        "module.0.module.normalizer.var": (6,),
        "module.0.module.normalizer.count": (),
        "module.0.module.net.0.weight": (16, 6),
        "module.0.module.net.0.bias": (16,),
        "module.0.module.net.2.weight": (5, 16),
        "module.0.module.net.2.bias": (5,),
    },
    "continuous": {
        "module.0.module.0.normalizer.mean": (6,),
        "module.0.module.0.normalizer.var": (6,),
        "module.0.module.0.normalizer.count": (),
        "module.0.module.0.net.0.weight": (16, 6),
        "module.0.module.0.net.0.bias": (16,),
        "module.0.module.0.net.2.weight": (6, 16),
        "module.0.module.0.net.2.bias": (6,),
    },
}
DEFAULT_CRITIC_STATE = {
    "module.normalizer.mean": (6,),
    "module.normalizer.var": (6,),
    "module.normalizer.count": (),
    "module.net.0.weight": (16, 6),
    "module.net.0.bias": (16,),
    "module.net.2.weight": (1, 16),
    "module.net.2.bias": (1,),
}


@pytest.mark.parametrize("kind", ["discrete", "continuous"])
def test_default_networks_keep_their_parameter_names_and_shapes(kind):
    spec = DISCRETE if kind == "discrete" else CONTINUOUS
    actor, critic = make_actor_critic(6, spec, hidden=[16])
    assert {k: tuple(v.shape) for k, v in actor.state_dict().items()} == DEFAULT_ACTOR_STATE[kind]
    assert {k: tuple(v.shape) for k, v in critic.state_dict().items()} == DEFAULT_CRITIC_STATE


@pytest.mark.parametrize("kind", ["discrete", "continuous"])
def test_explicit_defaults_are_the_default(kind):
    spec = DISCRETE if kind == "discrete" else CONTINUOUS
    td = TensorDict({"hyper_state": torch.randn(8, 6)}, [8])
    outs = []
    for kwargs in (
        {},
        {"continuous_dist": "tanh_normal", "input_embeddings": None, "init_std": 1.0},
    ):
        torch.manual_seed(0)
        actor, critic = make_actor_critic(6, spec, hidden=[16], **kwargs)
        with torch.no_grad(), set_exploration_type(ExplorationType.RANDOM):
            torch.manual_seed(1)
            out = critic(actor(td.clone()))
        outs.append(out)
    for key in ("action", "action_log_prob", "state_value"):
        assert torch.equal(outs[0][key], outs[1][key])


def test_default_outputs_are_todays_for_a_fixed_seed():
    """Numbers recorded from the networks before the options existed (same seed and calls); they
    were bit-identical on the machine that added the options, a small tolerance covers other
    CPUs' float kernels."""
    spec = Bounded(-torch.ones(4, 3), torch.ones(4, 3), shape=(4, 3))
    torch.manual_seed(0)
    actor, critic = make_actor_critic(6, spec, hidden=[16, 16], critic_extra={"task": 2})
    td = TensorDict({"hyper_state": torch.randn(4, 6), "task": torch.randn(4, 2)}, [4])
    with torch.no_grad(), set_exploration_type(ExplorationType.RANDOM):
        torch.manual_seed(1)
        out = actor(td.clone())
    value = critic(td.clone())["state_value"].detach()
    expected_log_prob = [
        -2.5433945655822754,
        -2.4926488399505615,
        -1.7246158123016357,
        -2.289931297302246,
    ]
    expected_value = [
        -0.3966984748840332,
        0.3341389298439026,
        -0.6244505643844604,
        -0.1717672348022461,
    ]
    torch.testing.assert_close(
        out["action_log_prob"], torch.tensor(expected_log_prob), rtol=1e-5, atol=1e-5
    )
    torch.testing.assert_close(value.flatten(), torch.tensor(expected_value), rtol=1e-5, atol=1e-5)
