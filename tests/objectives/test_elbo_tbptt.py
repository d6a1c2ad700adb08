"""ELBOLoss(tbptt_steps=k): truncated BPTT in the re-encoding, as the original's tbptt_stepsize;
None keeps today's numbers."""

from __future__ import annotations

import pytest
import torch
from tensordict import TensorDict
from torch import nn

from torchrl_bamdp.modules import BeliefEncoder, RewardDecoder, StateDecoder, TransitionBatch
from torchrl_bamdp.objectives import ELBOLoss

N, T = 3, 12


def make_encoder(seed: int = 0) -> BeliefEncoder:
    torch.manual_seed(seed)
    return BeliefEncoder(
        obs_dim=3,
        action_dim=2,
        discrete_actions=False,
        latent_dim=4,
        hidden_size=10,
        action_embed=4,
    )


def make_td(seed: int = 1) -> TensorDict:
    g = torch.Generator().manual_seed(seed)
    return TensorDict(
        {
            "observation": torch.randn(N, T, 3, generator=g),
            "action": torch.randn(N, T, 2, generator=g),
            "next": {
                "true_observation": torch.randn(N, T, 3, generator=g),
                "reward": torch.randn(N, T, 1, generator=g),
            },
        },
        [N, T],
    )


def make_loss(encoder: nn.Module, **kwargs) -> ELBOLoss:
    torch.manual_seed(5)
    # A reward decoder that does not read the action: actions reach the loss only through the
    # encoder, so their gradient shows how far back the re-encoding backpropagates.
    decoder = RewardDecoder(4, 3, 2, hidden=(8,), use_action=False)
    return ELBOLoss(
        encoder, reward_decoder=decoder, generator=torch.Generator().manual_seed(7), **kwargs
    )


class StepLoopTBPTT(nn.Module):
    """A reference written independently of ``BeliefEncoder.sequence``: one ``step`` per
    transition, the hidden state detached after every k-th transition."""

    def __init__(self, inner: BeliefEncoder, k: int) -> None:
        super().__init__()
        self.inner, self.k = inner, k
        self.latent_dim = inner.latent_dim

    def sequence(self, actions, rewards, next_obs):
        n = actions.shape[0]
        mean, logvar = self.inner.prior(n, 1)
        means, logvars = [mean[:, 0]], [logvar[:, 0]]
        h = self.inner.initial_hidden(n)
        for t in range(actions.shape[1]):
            m, lv, h = self.inner.step(actions[:, t], rewards[:, t], next_obs[:, t], h)
            means.append(m)
            logvars.append(lv)
            if (t + 1) % self.k == 0:
                h = h.detach()
        return torch.stack(means, 1), torch.stack(logvars, 1), None


def _action_grad(loss: ELBOLoss, td: TensorDict, term: str | None = None) -> torch.Tensor:
    td = td.clone()
    actions = td["action"].requires_grad_(True)
    out = loss(td)
    total = out[term] if term is not None else sum(out.values())
    (grad,) = torch.autograd.grad(total, actions)
    return grad


def test_tbptt_none_is_the_default_and_todays_numbers():
    """The ELBO of the fixed-seed batch recorded before tbptt_steps existed (bit-identical on the
    machine that added it; a small tolerance covers other CPUs' float kernels)."""
    torch.manual_seed(0)
    encoder = BeliefEncoder(obs_dim=3, action_dim=2, discrete_actions=False, action_embed=4)
    torch.manual_seed(0)
    decoder = RewardDecoder(5, 3, 2)
    StateDecoder(5, 3, 2)  # built next when the numbers were recorded: the same random stream
    b = TransitionBatch(
        torch.randn(2, 9, 3), torch.randn(2, 9, 2), torch.randn(2, 9, 3), torch.randn(2, 9, 1)
    )
    td = TensorDict(
        {
            "observation": b.obs,
            "action": b.action,
            "next": {"true_observation": b.next_obs, "reward": b.reward},
        },
        [2, 9],
    )
    results = {}
    for tbptt in ("absent", None):
        kwargs = {} if tbptt == "absent" else {"tbptt_steps": tbptt}
        loss = ELBOLoss(
            encoder, reward_decoder=decoder, generator=torch.Generator().manual_seed(3), **kwargs
        )
        results[tbptt] = loss(td)
    for key in ("loss_kl", "loss_reward"):
        assert torch.equal(results["absent"][key], results[None][key])
    assert results[None]["loss_kl"].item() == pytest.approx(0.050904061645269394, rel=1e-5)
    assert results[None]["loss_reward"].item() == pytest.approx(136.5078125, rel=1e-5)


@pytest.mark.parametrize("k", [1, 4, 5, 50])
def test_tbptt_keeps_the_loss_value(k):
    td = make_td()
    full = make_loss(make_encoder())(td)
    truncated = make_loss(make_encoder(), tbptt_steps=k)(td)
    for key in ("loss_kl", "loss_reward"):
        torch.testing.assert_close(truncated[key], full[key], rtol=1e-6, atol=1e-6)


@pytest.mark.parametrize("k", [1, 4, 5])
def test_tbptt_gradients_equal_a_step_by_step_truncated_reference(k):
    td = make_td()
    encoder = make_encoder()
    grad = _action_grad(make_loss(encoder, tbptt_steps=k), td)
    reference = _action_grad(make_loss(StepLoopTBPTT(encoder, k)), td)
    torch.testing.assert_close(grad, reference, rtol=1e-5, atol=1e-6)
    full = _action_grad(make_loss(encoder), td)
    assert not torch.allclose(grad, full)  # truncation changes the gradient
    # The parameters' gradients too (the encoder's and the decoder's).
    losses = [make_loss(encoder, tbptt_steps=k), make_loss(StepLoopTBPTT(encoder, k))]
    grads = []
    for loss in losses:
        encoder.zero_grad()
        sum(loss(td.clone()).values()).backward()
        grads.append([p.grad.clone() for p in encoder.parameters()])
    for a, b in zip(*grads, strict=True):
        torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-6)


def test_tbptt_inputs_reach_only_terms_at_most_k_steps_later():
    """With k = 4 the actions of chunk 0 (transitions 0..3) reach the KL only through q_1..q_4,
    i.e. through KL_1..KL_5 (KL_s reads q_s and q_{s-1}). Changing every input from transition 5
    on changes KL_6, KL_7, ... but not chunk 0's gradient; without truncation it does."""
    k = 4
    td = make_td()
    encoder = make_encoder()
    loss = make_loss(encoder, tbptt_steps=k)
    kl_grad = _action_grad(loss, td, "loss_kl")
    perturbed = td.clone()
    perturbed["action"][:, 5:] += 3.0
    perturbed["next", "reward"][:, 5:] -= 2.0
    perturbed["next", "true_observation"][:, 5:] *= -1.0
    kl_grad_perturbed = _action_grad(make_loss(encoder, tbptt_steps=k), perturbed, "loss_kl")
    torch.testing.assert_close(kl_grad_perturbed[:, :k], kl_grad[:, :k], rtol=1e-5, atol=1e-7)
    # Without truncation those later terms do reach chunk 0.
    full = _action_grad(make_loss(encoder), td, "loss_kl")
    full_perturbed = _action_grad(make_loss(encoder), perturbed, "loss_kl")
    assert not torch.allclose(full_perturbed[:, :k], full[:, :k])


@pytest.mark.parametrize("bad", [0, -1, 2.5, True, "50"])
def test_tbptt_steps_is_validated(bad):
    with pytest.raises(ValueError, match="tbptt_steps must be None or an int >= 1"):
        make_loss(make_encoder(), tbptt_steps=bad)
