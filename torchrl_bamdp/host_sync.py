"""Find host syncs without a GPU: a mode that records every op that would wait for a device.

On a GPU a *host sync* stops the Python thread until the device has caught up: reading a
tensor's value on the host (``.item()``, ``bool(t)``, ``float(t)``, ``int(t)``, ``.tolist()``,
``.numpy()``) or running an op whose output *shape* depends on tensor values (``t[mask]``,
``t[mask] = v``, ``nonzero``, ``masked_select``, ``unique``, ...). A handful per env step is
enough to make a GPU rollout slower than the CPU one (``benchmarks/results/device_parity.json``).

:class:`HostSyncCounter` finds them on any device, the CPU included, so a test can forbid them
on a machine without a GPU: it is a :class:`~torch.utils._python_dispatch.TorchDispatchMode`
that sees every ATen op (``_local_scalar_dense`` is what every scalar read lowers to) plus
patches for the two reads that bypass the dispatcher (``tolist`` and ``numpy``). It records
where each sync came from (the innermost frame inside this package) so a failing test points
at the line.

``torch.cuda.set_sync_debug_mode`` does the same on a real GPU; this one needs none.
"""

from __future__ import annotations

import os
import traceback
from collections import Counter
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import torch
from torch.utils._python_dispatch import TorchDispatchMode

_aten = torch.ops.aten

# Ops whose *value* is read on the host.
_SCALAR_READS = {
    _aten._local_scalar_dense.default,
    _aten.is_nonzero.default,
    _aten.equal.default,
}
# Ops whose output shape depends on values (the host must wait to allocate the output).
_DATA_DEPENDENT = {
    _aten.nonzero.default,
    _aten.masked_select.default,
    _aten._unique2.default,
    _aten.unique_dim.default,
    _aten.unique_consecutive.default,
    _aten.repeat_interleave.Tensor,
}
# Indexing with a boolean mask is a nonzero in disguise.
_INDEXING = {
    _aten.index.Tensor,
    _aten.index_put.default,
    _aten.index_put_.default,
    _aten._index_put_impl_.default,
}

_PACKAGE = str(Path(__file__).resolve().parent)
_TORCH = str(Path(torch.__file__).resolve().parent) + os.sep  # not torchrl/
#: The prefix of a sync site that no frame of this package is on the stack of (a library's own
#: loop, e.g. TorchRL's rollout checking ``done``, called from outside the package).
OUTSIDE = "(outside) "
#: PyTorch's frames between any op and a dispatch mode (not where a sync comes from).
_DISPATCH_MACHINERY = tuple(
    _TORCH + name
    for name in ("_compile.py", "_dynamo", "_ops.py", "utils/_python_dispatch.py", "overrides.py")
)
#: Between our calling line and the library code that issued the sync.
VIA = " via "


def _caller() -> str:
    """Where a sync happened, ``file:line`` of the innermost frame of this package (outside this
    file), followed by `` via <file:line>`` when the op was issued by a library under it (the
    innermost frame that is neither ours nor PyTorch's, e.g. TorchRL's loss) or `` via torch``
    (PyTorch's own Python code, e.g. ``clip_grad_norm_``); :data:`OUTSIDE` and the innermost
    non-PyTorch frame when no frame of this package is on the stack."""
    frames = [
        f
        for f in traceback.extract_stack()
        if f.filename != __file__ and not f.filename.startswith(_DISPATCH_MACHINERY)
    ]
    ours = next((f for f in reversed(frames) if f.filename.startswith(_PACKAGE)), None)
    library = next((f for f in reversed(frames) if not f.filename.startswith(_TORCH)), None)
    if ours is None:
        frame = library or frames[-1]
        return f"{OUTSIDE}{frame.filename}:{frame.lineno}"
    site = f"{Path(ours.filename).relative_to(Path(_PACKAGE).parent)}:{ours.lineno}"
    if library is not ours:
        return f"{site}{VIA}{_short(library.filename)}:{library.lineno}"
    if frames[-1] is not ours:
        return f"{site}{VIA}torch"
    return site


def _short(filename: str) -> str:
    """``torchrl/objectives/ppo.py`` for a file under site-packages (else the path)."""
    parts = Path(filename).parts
    if "site-packages" in parts:
        return "/".join(parts[parts.index("site-packages") + 1 :])
    return filename


class HostSyncCounter(TorchDispatchMode):
    """Count and locate host syncs in a block of code, on any device.

    Use it as a context manager; afterwards :attr:`syncs` maps ``"op @ file:line"`` to how
    many times it happened and :attr:`total` is their sum; :attr:`inside` counts those with our
    code on the stack (a sync in a library called *by* our code is labelled with our calling
    line and the library's, ``... via torchrl/...``; TorchRL's own rollout loop, called from a
    test, is ``(outside)``) and :attr:`own` those our own lines issued.

    Examples
    --------
    >>> import torch
    >>> x = torch.arange(4.0)
    >>> with HostSyncCounter() as syncs:
    ...     y = x * 2                 # no sync
    ...     big = bool((y > 3).any())  # a scalar read
    ...     z = y[y > 3]               # a data-dependent shape
    >>> syncs.total
    2
    """

    def __init__(self) -> None:
        super().__init__()
        self.syncs: Counter[str] = Counter()
        self._patched: dict[str, Any] = {}

    @property
    def total(self) -> int:
        """How many host syncs were recorded."""
        return sum(self.syncs.values())

    @property
    def inside(self) -> int:
        """How many of them had a frame of this package on the stack (our code or a library
        our code called)."""
        return sum(n for site, n in self.syncs.items() if OUTSIDE not in site)

    @property
    def own(self) -> int:
        """How many were issued by this package's own lines (a ``bool()``, ``.item()``, mask
        index, ... written here), not by a library (TorchRL, PyTorch) it called."""
        return sum(n for site, n in self.syncs.items() if OUTSIDE not in site and VIA not in site)

    def record(self, what: str) -> None:
        """Record one sync of kind ``what`` at the caller's line."""
        self.syncs[f"{what} @ {_caller()}"] += 1

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):  # noqa: D105
        kwargs = kwargs or {}
        if func in _SCALAR_READS or func in _DATA_DEPENDENT:
            self.record(str(func.overloadpacket.__name__))
        elif func in _INDEXING:
            indices = args[1] if len(args) > 1 else kwargs.get("indices", ())
            if any(
                isinstance(i, torch.Tensor) and i.dtype in (torch.bool, torch.uint8)
                for i in indices or ()
            ):
                self.record(f"{func.overloadpacket.__name__}[bool mask]")
        return func(*args, **kwargs)

    def __enter__(self) -> HostSyncCounter:
        super().__enter__()
        for name in ("tolist", "numpy"):
            original = getattr(torch.Tensor, name)
            self._patched[name] = original

            def patched(tensor, *args, _original=original, _name=name, **kwargs):
                self.record(_name)
                return _original(tensor, *args, **kwargs)

            setattr(torch.Tensor, name, patched)
        return self

    def __exit__(self, *exc: Any) -> None:
        for name, original in self._patched.items():
            setattr(torch.Tensor, name, original)
        self._patched.clear()
        super().__exit__(*exc)

    def report(self) -> str:
        """One line per sync site, most frequent first."""
        return "\n".join(f"{count:6d}  {site}" for site, count in self.syncs.most_common())


@contextmanager
def no_host_syncs(inside_only: bool = False) -> Iterator[HostSyncCounter]:
    """Fail with the list of sync sites if the block syncs the host (with ``inside_only``, only
    the syncs of this package's code count).

    Examples
    --------
    >>> import torch
    >>> with no_host_syncs():
    ...     y = torch.ones(3) + 1
    """
    counter = HostSyncCounter()
    with counter:
        yield counter
    found = counter.inside if inside_only else counter.total
    if found:
        raise AssertionError(f"{found} host syncs:\n{counter.report()}")
