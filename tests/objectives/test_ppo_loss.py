"""TensorClipPPOLoss computes exactly what ClipPPOLoss computes, from the minibatch's tensors."""

from __future__ import annotations

import pytest
import torch
from tensordict import TensorDict
from torchrl.data import Bounded, Categorical
from torchrl.objectives import ClipPPOLoss

from torchrl_bamdp.modules.actor_critic import find_input_normalizers, make_actor_critic
from torchrl_bamdp.objectives import TensorClipPPOLoss

N, DIM, ACTIONS = 37, 6, 3


def _networks(dist: str, critic_extra: bool, embeddings: bool):
    torch.manual_seed(0)
    if dist == "categorical":
        spec = Categorical(5, shape=(N,))
    else:
        spec = Bounded(-2 * torch.ones(N, ACTIONS), 2 * torch.ones(N, ACTIONS), shape=(N, ACTIONS))
    actor, critic = make_actor_critic(
        DIM,
        spec,
        hidden=(16, 16),
        critic_extra={"task": 2} if critic_extra else None,
        continuous_dist="gaussian" if dist == "gaussian" else "tanh_normal",
        input_embeddings={"observation": (2, 4), "belief": (4, 4)} if embeddings else None,
    )
    generator = torch.Generator().manual_seed(1)
    for norm in find_input_normalizers(torch.nn.ModuleList([actor, critic])):
        norm.update(torch.randn(50, norm.mean.shape[0], generator=generator) * 3 + 1)
    return actor, critic


def _minibatch(actor, critic, dist: str) -> TensorDict:
    generator = torch.Generator().manual_seed(2)
    batch = TensorDict(
        {
            "hyper_state": torch.randn(N, DIM, generator=generator),
            "task": torch.randn(N, 2, generator=generator),
            "advantage": torch.randn(N, 1, generator=generator) * 2 + 0.5,
            "value_target": torch.randn(N, 1, generator=generator),
        },
        [N],
    )
    torch.manual_seed(3)
    with torch.no_grad():
        acted = actor(batch.clone())
    batch.set("action", acted["action"])
    # The behaviour policy differed a little from the current one: some ratios are clipped.
    noise = torch.randn(N, generator=generator) * 0.3
    batch.set("action_log_prob", acted["action_log_prob"] + noise)
    # Values from a critic a little different from the current one: some are clipped.
    with torch.no_grad():
        values = critic(batch.clone())["state_value"]
    batch.set("state_value", values + torch.randn(N, 1, generator=generator) * 0.1)
    return batch


def _grads(actor, critic, loss_td) -> list[torch.Tensor]:
    params = list({id(p): p for p in [*actor.parameters(), *critic.parameters()]}.values())
    total = loss_td["loss_objective"] + loss_td["loss_critic"] + loss_td["loss_entropy"]
    return torch.autograd.grad(total, params, allow_unused=True)


@pytest.mark.parametrize("dist", ["categorical", "tanh_normal", "gaussian"])
@pytest.mark.parametrize("normalize_advantage", [False, True])
@pytest.mark.parametrize("clip_value", [None, 0.1])
@pytest.mark.parametrize("extras", [False, True])
def test_same_outputs_and_gradients_as_clip_ppo_loss(dist, normalize_advantage, clip_value, extras):
    actor, critic = _networks(dist, critic_extra=extras, embeddings=extras)
    batch = _minibatch(actor, critic, dist)
    options = dict(
        clip_epsilon=0.2,
        entropy_coeff=0.03,
        critic_coeff=0.5,
        loss_critic_type="smooth_l1",
        normalize_advantage=normalize_advantage,
        clip_value=clip_value,
    )
    reference = ClipPPOLoss(actor, critic, functional=False, **options)
    ours = TensorClipPPOLoss(actor, critic, **options)
    # TanhNormal has no analytic entropy: both draw one reparameterised sample, from one stream.
    torch.manual_seed(4)
    expected = reference(batch.clone())
    torch.manual_seed(4)
    got = ours(batch.clone())
    assert set(got.keys()) == set(expected.keys())
    for key in expected.keys():  # noqa: SIM118 (iterating a TensorDict walks its batch)
        torch.testing.assert_close(got[key], expected[key], rtol=1e-6, atol=1e-7, msg=key)
    assert 0 < float(expected["clip_fraction"]) < 1  # the clipped branch is exercised
    if clip_value is not None:
        assert 0 < float(expected["value_clip_fraction"]) < 1
    for g_ours, g_ref in zip(
        _grads(actor, critic, got), _grads(actor, critic, expected), strict=True
    ):
        if g_ref is None:
            assert g_ours is None
        else:
            torch.testing.assert_close(g_ours, g_ref, rtol=1e-5, atol=1e-7)


def test_gradient_reaches_a_reencoded_input():
    """RL2 re-encodes the hyper-state with gradients: both losses send the same gradient into it."""
    actor, critic = _networks("categorical", critic_extra=False, embeddings=False)
    batch = _minibatch(actor, critic, "categorical")
    grads = []
    for cls in (ClipPPOLoss, TensorClipPPOLoss):
        kwargs = {"functional": False} if cls is ClipPPOLoss else {}
        loss = cls(actor, critic, entropy_coeff=0.01, critic_coeff=0.5, **kwargs)
        hyper_state = batch["hyper_state"].clone().requires_grad_(True)
        minibatch = batch.clone()
        minibatch.set("hyper_state", hyper_state)
        out = loss(minibatch)
        total = out["loss_objective"] + out["loss_critic"] + out["loss_entropy"]
        (grad,) = torch.autograd.grad(total, [hyper_state])
        grads.append(grad)
    assert grads[0].abs().sum() > 0
    torch.testing.assert_close(grads[1], grads[0])


def test_validity_mask_is_honoured_as_clip_ppo_loss_does():
    actor, critic = _networks("categorical", critic_extra=False, embeddings=False)
    batch = _minibatch(actor, critic, "categorical")
    mask = torch.arange(N) % 3 != 0
    batch.set(("collector", "mask"), mask)
    reference = ClipPPOLoss(actor, critic, functional=False, entropy_coeff=0.01)(batch.clone())
    got = TensorClipPPOLoss(actor, critic, entropy_coeff=0.01)(batch.clone())
    for key in ("loss_objective", "loss_critic", "loss_entropy"):
        torch.testing.assert_close(got[key], reference[key])
    unmasked = TensorClipPPOLoss(actor, critic, entropy_coeff=0.01)(
        batch.exclude(("collector", "mask"))
    )
    assert not torch.allclose(unmasked["loss_objective"], got["loss_objective"])


def test_schedules_act_through_the_shared_buffers():
    """The entropy schedule writes ``entropy_coeff``; the loss reads it on every call."""
    actor, critic = _networks("categorical", critic_extra=False, embeddings=False)
    batch = _minibatch(actor, critic, "categorical")
    loss = TensorClipPPOLoss(actor, critic, entropy_coeff=0.05)
    before = loss(batch.clone())["loss_entropy"].detach()
    loss.entropy_coeff.fill_(0.0)
    assert float(before) != 0.0
    assert float(loss(batch.clone())["loss_entropy"].detach()) == 0.0


@pytest.mark.parametrize(
    ("kwargs", "named"),
    [
        ({"functional": True}, "functional"),
        ({"delay_actor": True}, "delay_actor"),
        ({"max_importance_ratio": 2.0}, "max_importance_ratio"),
        ({"normalize_advantage_exclude_dims": (0,)}, "normalize_advantage_exclude_dims"),
        ({"reduction": "sum"}, "reduction"),
    ],
)
def test_unsupported_options_are_refused_by_name(kwargs, named):
    actor, critic = _networks("categorical", critic_extra=False, embeddings=False)
    with pytest.raises(ValueError, match=named):
        TensorClipPPOLoss(actor, critic, **kwargs)


def test_missing_advantage_names_the_entry():
    actor, critic = _networks("categorical", critic_extra=False, embeddings=False)
    batch = _minibatch(actor, critic, "categorical").exclude("advantage")
    with pytest.raises(KeyError, match="advantage"):
        TensorClipPPOLoss(actor, critic)(batch)


def test_without_diagnostics_the_losses_and_logged_terms_are_the_same():
    actor, critic = _networks("tanh_normal", critic_extra=True, embeddings=False)
    batch = _minibatch(actor, critic, "tanh_normal")
    full, lean = (
        TensorClipPPOLoss(actor, critic, entropy_coeff=0.01, clip_value=0.1, diagnostics=flag)
        for flag in (True, False)
    )
    torch.manual_seed(5)
    expected = full(batch.clone())
    torch.manual_seed(5)
    got = lean(batch.clone())
    assert set(expected.keys()) - set(got.keys()) == {
        "ESS",
        "max_ratio",
        "mean_ratio",
        "explained_variance",
    }
    for key in got.keys():  # noqa: SIM118 (iterating a TensorDict walks its batch)
        torch.testing.assert_close(got[key], expected[key], msg=key)


def test_minibatch_keys_are_what_forward_reads():
    """A minibatch holding only ``minibatch_keys`` gives the full minibatch's outputs."""
    actor, critic = _networks("gaussian", critic_extra=True, embeddings=False)
    batch = _minibatch(actor, critic, "gaussian")
    batch.set(("next", "reward"), torch.zeros(N, 1))
    loss = TensorClipPPOLoss(actor, critic, clip_value=0.1)
    assert set(loss.minibatch_keys) >= {
        "hyper_state",
        "task",
        "action",
        "action_log_prob",
        "advantage",
        "value_target",
        "state_value",
    }
    selected = batch.select(*loss.minibatch_keys, strict=False)
    assert ("next", "reward") not in selected.keys(include_nested=True)
    full, lean = loss(batch.clone()), loss(selected)
    for key in full.keys():  # noqa: SIM118 (iterating a TensorDict walks its batch)
        torch.testing.assert_close(lean[key], full[key], msg=key)


def test_state_dict_and_parameters_are_clip_ppo_loss_s():
    """The networks are reached through the loss's own actor and critic, not registered again."""
    actor, critic = _networks("tanh_normal", critic_extra=True, embeddings=True)
    ours = TensorClipPPOLoss(actor, critic)
    reference = ClipPPOLoss(actor, critic, functional=False)
    assert list(ours.state_dict()) == list(reference.state_dict())
    assert [p.shape for p in ours.parameters()] == [p.shape for p in reference.parameters()]
