"""gru_sequence: the NumPy backpropagation through the GRU against nn.GRU."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from torchrl_bamdp.modules import gru as gru_module
from torchrl_bamdp.modules.encoder import BeliefEncoder
from torchrl_bamdp.modules.gru import _GRUFunction, fast_path_applies, gru_sequence


def _gru(inputs: int, hidden: int, dtype: torch.dtype = torch.float32) -> nn.GRU:
    torch.manual_seed(0)
    gru = nn.GRU(inputs, hidden, batch_first=True).to(dtype)
    with torch.no_grad():
        for param in gru.parameters():
            param.normal_(0.0, 0.4)  # non-zero biases too: every term of the gradient counts
    return gru


def _grads(fn, gru: nn.GRU, x: torch.Tensor, h0: torch.Tensor, weight: torch.Tensor):
    gru.zero_grad()
    x = x.detach().clone().requires_grad_(True)
    h0 = h0.detach().clone().requires_grad_(True)
    out, h_last = fn(gru, x, h0)
    ((out * weight).sum() + (h_last * weight[:, -1]).sum()).backward()
    return (
        out.detach(),
        h_last.detach(),
        x.grad,
        h0.grad,
        [p.grad.clone() for p in gru.parameters()],
    )


def _assert_same(fast, reference) -> None:
    """Values, then parameter gradients (summed over many steps: a looser tolerance)."""
    *values, grads = fast
    *ref_values, ref_grads = reference
    for got, want in zip(values, ref_values, strict=True):
        torch.testing.assert_close(got, want, rtol=1e-5, atol=1e-5)
    for got, want in zip(grads, ref_grads, strict=True):
        torch.testing.assert_close(got, want, rtol=1e-4, atol=1e-4)


def test_gradient_is_exact_in_float64():
    gru = _gru(3, 4, torch.float64)
    x = torch.randn(2, 6, 3, dtype=torch.float64, requires_grad=True)
    h0 = torch.randn(2, 4, dtype=torch.float64, requires_grad=True)
    params = (gru.weight_ih_l0, gru.weight_hh_l0, gru.bias_ih_l0, gru.bias_hh_l0)
    assert torch.autograd.gradcheck(_GRUFunction.apply, (x, h0, *params))


@pytest.mark.parametrize("batch", [1, 3, gru_module.FAST_GRU_MAX_BATCH])
def test_values_and_gradients_equal_nn_gru(batch):
    gru = _gru(5, 8)
    x, h0 = torch.randn(batch, 40, 5), torch.randn(1, batch, 8)
    weight = torch.randn(batch, 40, 8)
    assert fast_path_applies(gru, x.requires_grad_(True))
    fast = _grads(gru_sequence, gru, x, h0, weight)
    reference = _grads(lambda g, a, b: g(a, b), gru, x, h0, weight)
    _assert_same(fast, reference)


def test_without_gradients_or_for_large_batches_it_is_nn_gru_itself():
    gru = _gru(5, 8)
    small = torch.randn(2, 30, 5)
    large = torch.randn(gru_module.FAST_GRU_MAX_BATCH + 1, 30, 5)
    with torch.no_grad():
        assert not fast_path_applies(gru, small)
        assert torch.equal(gru_sequence(gru, small, torch.zeros(1, 2, 8))[0], gru(small)[0])
    assert not fast_path_applies(gru, large)
    h0 = torch.zeros(1, large.shape[0], 8)
    assert torch.equal(gru_sequence(gru, large, h0)[0], gru(large, h0)[0])
    two_layers = nn.GRU(5, 8, num_layers=2, batch_first=True)
    assert not fast_path_applies(two_layers, small)
    assert not fast_path_applies(gru.double(), small)  # dtypes differ: nn.GRU decides


def test_the_switch_turns_it_off(monkeypatch):
    gru = _gru(5, 8)
    monkeypatch.setattr(gru_module, "FAST_GRU_MAX_BATCH", 0)
    assert not fast_path_applies(gru, torch.randn(1, 10, 5))


@pytest.mark.parametrize("detach_every", [None, 7])
def test_encoder_sequence_is_the_same_with_and_without_it(monkeypatch, detach_every):
    """BeliefEncoder.sequence (RL2's and the ELBO's re-encoding), truncated BPTT included."""
    torch.manual_seed(1)
    encoder = BeliefEncoder(
        obs_dim=3, action_dim=2, discrete_actions=False, latent_dim=4, hidden_size=16
    )
    actions, rewards, obs = torch.randn(2, 20, 2), torch.randn(2, 20, 1), torch.randn(2, 20, 3)

    def run():
        encoder.zero_grad()
        mean, logvar, hidden = encoder.sequence(actions, rewards, obs, detach_every=detach_every)
        (mean.square().sum() + logvar.sum() + hidden.sum()).backward()
        grads = [p.grad.clone() for p in encoder.parameters()]
        return mean.detach(), logvar.detach(), hidden.detach(), grads

    calls = []
    apply = _GRUFunction.apply
    monkeypatch.setattr(_GRUFunction, "apply", lambda *a: calls.append(1) or apply(*a))
    fast = run()
    assert len(calls) == (1 if detach_every is None else 3)  # the NumPy pass ran, per chunk
    monkeypatch.setattr(gru_module, "FAST_GRU_MAX_BATCH", 0)
    reference = run()
    assert len(calls) == (1 if detach_every is None else 3)  # and then did not
    _assert_same(fast, reference)


def test_non_contiguous_inputs_and_output_gradients():
    gru = _gru(5, 8)
    x = torch.randn(30, 2, 5).transpose(0, 1).requires_grad_(True)  # [2, 30, 5], strided
    h0 = torch.randn(1, 2, 8)
    out, _ = gru_sequence(gru, x, h0)
    out[:, ::2].sum().backward()  # a gradient with zero rows
    fast_grad = x.grad.clone()
    x.grad = None
    gru(x, h0)[0][:, ::2].sum().backward()
    torch.testing.assert_close(fast_grad, x.grad, rtol=1e-5, atol=1e-5)
