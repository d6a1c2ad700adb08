"""Backpropagation through a GRU over long sequences of a few trajectories, fast on the CPU.

RL2's PPO re-encodes each minibatch of whole tasks through the GRU with gradients (and
VariBAD's ELBO re-encodes its trajectory batch): on MuJoCo that is a [1-10, 400] sequence per
call. ``nn.GRU`` on the CPU runs such a sequence step by step as a dozen ATen operators per
step, each recorded for autograd, and at a batch of one or four rows almost all of that time is
per-operator overhead, not arithmetic. :func:`gru_sequence` computes the same recurrence and
its exact gradient (backpropagation through time written out, one pass back) in NumPy, whose
per-call overhead on small arrays is several times lower than torch's. Measured side by side
on the 2-core CPU machine (``benchmarks/gru_backprop.py``): RL2's whole PPO update on
``cheetah_vel`` (160 minibatches of one 400-step task) 3.0x faster; see
:data:`FAST_GRU_MAX_BATCH` for where it is used. Larger batches, other devices and ``no_grad``
calls run ``nn.GRU`` itself.

The values and gradients equal ``nn.GRU``'s up to float rounding (tested against it, and with
``torch.autograd.gradcheck`` in float64).
"""

from __future__ import annotations

import numpy as np
import torch
from torch import nn
from torch.autograd.function import once_differentiable

#: Largest number of sequences per call that :func:`gru_sequence` runs in NumPy (0 turns the
#: NumPy pass off). In ``benchmarks/gru_backprop.py`` (forward + backward, 400 steps, hidden
#: 128, one torch thread; ``benchmarks/results/gru_backprop.json``) the NumPy pass was 2-5x
#: faster than ``nn.GRU`` at 1-4 sequences, its lead shrinking with the batch (about 1.2-1.8x
#: at 8-16) and gone at GridNavi's ELBO batch of 100 x 60 steps. VariBAD's ELBO batches
#: (10-100 trajectories) stay on ``nn.GRU``: its update runs in a thread beside PPO's
#: (``train.parallel_updates``), hidden behind it. Measured on ``cheetah_vel`` (10 x 400, five
#: paired rounds, loaded 2 cores): the ELBO update alone took 0.120 s with the NumPy pass
#: against 0.201 s, the overlapped PPO + ELBO update 1.978 s against 1.970 s: nothing to gain
#: there, and ``nn.GRU``'s C++ loop leaves the GIL to PPO's Python.
FAST_GRU_MAX_BATCH = 8


def _sigmoid(x: np.ndarray, out: np.ndarray) -> np.ndarray:
    """``1 / (1 + exp(-x))`` into ``out``, as ``0.5 + 0.5 tanh(x / 2)`` (no overflow)."""
    np.multiply(x, 0.5, out=out)
    np.tanh(out, out=out)
    out *= 0.5
    out += 0.5
    return out


class _GRUFunction(torch.autograd.Function):
    """One GRU layer over ``x [B, T, I]`` from ``h0 [B, H]``: outputs ``[B, T, H]``.

    Gate order and equations are ``nn.GRU``'s (r, z, n):
    ``r = s(W_ir x + b_ir + W_hr h + b_hr)``, ``z = s(W_iz x + b_iz + W_hz h + b_hz)``,
    ``n = tanh(W_in x + b_in + r * (W_hn h + b_hn))``, ``h' = (1 - z) n + z h``.

    Buffers are torch tensors with NumPy views of the same memory: the per-step matrix products
    run in torch (``addmm`` / ``mm`` with ``out=``, on torch's thread setting; NumPy's BLAS
    would start threads of its own), the element-wise gate arithmetic in NumPy.
    """

    @staticmethod
    def forward(ctx, x, h0, w_ih, w_hh, b_ih, b_hh):  # noqa: D102
        batch, steps, _ = x.shape
        hidden = h0.shape[-1]
        two = 2 * hidden
        # The input half of every gate for all steps at once: one matrix product, [T, B, 3H].
        gi_t = torch.addmm(b_ih, x.reshape(batch * steps, -1), w_ih.t())
        gi = gi_t.view(batch, steps, 3 * hidden).transpose(0, 1).contiguous().numpy()
        w_hh_t = w_hh.t().contiguous()
        hs_t = x.new_empty(steps + 1, batch, hidden)
        hs_t[0] = h0
        gh_t = x.new_empty(steps, batch, 3 * hidden)  # W_h h + b_h
        gates_t = x.new_empty(steps, batch, 3 * hidden)  # r, z, n
        hs, gh, gates = hs_t.numpy(), gh_t.numpy(), gates_t.numpy()
        tmp = np.empty((batch, hidden), dtype=hs.dtype)
        for t in range(steps):
            torch.addmm(b_hh, hs_t[t], w_hh_t, out=gh_t[t])
            rz = gates[t, :, :two]
            np.add(gi[t, :, :two], gh[t, :, :two], out=rz)
            _sigmoid(rz, rz)
            n = gates[t, :, two:]
            np.multiply(rz[:, :hidden], gh[t, :, two:], out=n)
            n += gi[t, :, two:]
            np.tanh(n, out=n)
            np.subtract(hs[t], n, out=tmp)
            tmp *= rz[:, hidden:]
            np.add(n, tmp, out=hs[t + 1])
        ctx.hidden = hidden
        ctx.save_for_backward(x, w_ih, w_hh, hs_t, gates_t, gh_t[:, :, two:].contiguous())
        return hs_t[1:].transpose(0, 1).contiguous()

    @staticmethod
    @once_differentiable
    def backward(ctx, grad_out):  # noqa: D102
        x, w_ih, w_hh, hs_t, gates_t, ghn_t = ctx.saved_tensors
        hidden = ctx.hidden
        steps, batch, _ = gates_t.shape
        two = 2 * hidden
        hs, gates, ghn = hs_t.numpy(), gates_t.numpy(), ghn_t.numpy()
        grads = grad_out.transpose(0, 1).contiguous().numpy()
        d_gi_t = x.new_empty(steps, batch, 3 * hidden)
        d_gh_t = x.new_empty(steps, batch, 3 * hidden)
        d_gi, d_gh = d_gi_t.numpy(), d_gh_t.numpy()
        dh_t = x.new_zeros(batch, hidden)
        dh = dh_t.numpy()
        back_t = x.new_empty(batch, hidden)
        back = back_t.numpy()
        r, z, n = gates[:, :, :hidden], gates[:, :, hidden:two], gates[:, :, two:]
        # The factors of each step's gate gradients that do not depend on dh, for all steps at
        # once (a few large operations instead of a dozen small ones per step):
        # dn = dh (1 - z)(1 - n^2), dz = dh (h - n) z (1 - z), dr = dn (W_hn h + b_hn) r (1 - r).
        dn_factor = (1.0 - z) * (1.0 - n * n)
        dz_factor = (hs[:-1] - n) * z * (1.0 - z)
        dr_factor = ghn * r * (1.0 - r)
        for t in range(steps - 1, -1, -1):
            dh += grads[t]
            # r and z: the same gradient for their input and hidden halves (copied to d_gi
            # after the loop); n: d_gi gets dn, d_gh gets dn * r.
            dn = d_gi[t, :, two:]
            np.multiply(dh, dn_factor[t], out=dn)
            np.multiply(dh, dz_factor[t], out=d_gh[t, :, hidden:two])
            np.multiply(dn, dr_factor[t], out=d_gh[t, :, :hidden])
            np.multiply(dn, r[t], out=d_gh[t, :, two:])
            # dh_prev = dh z + dgh W_hh
            torch.mm(d_gh_t[t], w_hh, out=back_t)
            dh *= z[t]
            dh += back
        d_gi[:, :, :two] = d_gh[:, :, :two]
        d_gi_flat = d_gi_t.transpose(0, 1).reshape(batch * steps, 3 * hidden)
        d_gh_flat = d_gh_t.view(steps * batch, 3 * hidden)
        dx = (d_gi_flat @ w_ih).view_as(x)
        dw_ih = d_gi_flat.t() @ x.reshape(batch * steps, -1)
        dw_hh = d_gh_flat.t() @ hs_t[:-1].reshape(steps * batch, hidden)
        return dx, dh_t, dw_ih, dw_hh, d_gi_flat.sum(0), d_gh_flat.sum(0)


def fast_path_applies(gru: nn.GRU, x: torch.Tensor) -> bool:
    """Whether :func:`gru_sequence` computes ``gru`` over ``x`` in NumPy."""
    if not torch.is_grad_enabled() or x.device.type != "cpu" or x.dim() != 3:
        return False
    if gru.num_layers != 1 or not gru.batch_first or not gru.bias or gru.bidirectional:
        return False
    weights = (gru.weight_ih_l0, gru.weight_hh_l0, gru.bias_ih_l0, gru.bias_hh_l0)
    return (
        x.dtype in (torch.float32, torch.float64)
        and all(w.dtype == x.dtype and w.device.type == "cpu" for w in weights)
        and 0 < x.shape[0] <= FAST_GRU_MAX_BATCH
        and x.shape[1] > 0
        and (x.requires_grad or any(w.requires_grad for w in weights))
    )


def gru_sequence(
    gru: nn.GRU, x: torch.Tensor, h0: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor]:
    """``gru(x, h0)`` for a one-layer, batch-first ``nn.GRU``: ``(out [B, T, H], h_T [1, B, H])``.

    With gradients, on the CPU and for at most :data:`FAST_GRU_MAX_BATCH` sequences, the pass
    and its backward run in NumPy (same values and gradients up to float rounding); otherwise
    it is ``gru(x, h0)``.

    Examples
    --------
    >>> import torch
    >>> gru = torch.nn.GRU(3, 4, batch_first=True)
    >>> x, h0 = torch.randn(2, 5, 3), torch.zeros(1, 2, 4)
    >>> out, h = gru_sequence(gru, x, h0)
    >>> torch.allclose(out, gru(x, h0)[0], atol=1e-5), out.shape, h.shape
    (True, torch.Size([2, 5, 4]), torch.Size([1, 2, 4]))
    """
    if not fast_path_applies(gru, x):
        return gru(x, h0)
    out = _GRUFunction.apply(
        x.contiguous(),
        h0[0].contiguous(),
        gru.weight_ih_l0,
        gru.weight_hh_l0,
        gru.bias_ih_l0,
        gru.bias_hh_l0,
    )
    return out, out[:, -1].unsqueeze(0)
