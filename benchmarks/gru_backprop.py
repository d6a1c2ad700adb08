"""Backpropagation through the belief GRU: ``nn.GRU`` against ``gru_sequence``'s NumPy pass.

RL2 re-encodes every PPO minibatch of whole tasks through its GRU with gradients; on MuJoCo a
minibatch is 1-8 tasks of 400 steps (``cheetah_vel``: 1, ``cheetah_dir``: 4,
``walker_rand_params``: 8), and that backpropagation is most of an RL2 iteration. This script
measures, side by side in one process on one torch thread:

* ``gru``: forward + backward of one GRU layer (a summed loss) per sequence shape, ``nn.GRU``
  against :func:`torchrl_bamdp.modules.gru.gru_sequence` (NumPy pass forced on, at every batch
  size, to show where it stops paying; the shipped threshold is ``FAST_GRU_MAX_BATCH``);
* ``ppo_update``: ``Trainer.ppo_update`` of ``algo=rl2`` on one collected batch per family
  (GridNavi too: 16 minibatches of 4 tasks of 60 steps), as
  ``bamdp-train`` runs it, with the fast path off (``FAST_GRU_MAX_BATCH=0``) and on (shipped),
  from the same weights and random state each time.

Every variant runs once untimed, then ``--repeats`` interleaved rounds (a b a b ...); reported
are medians and the median of the per-round ratios (``paired``). Run::

    .venv/bin/python benchmarks/gru_backprop.py             # about 3 minutes on 2 cores
    .venv/bin/python benchmarks/gru_backprop.py --families cheetah_vel --repeats 3
"""

from __future__ import annotations

import argparse
import contextlib
import copy
import os
import platform
import statistics
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import numpy as np
import tensordict
import torch
import torchrl
from torch import nn

from torchrl_bamdp.cli import compose_config
from torchrl_bamdp.modules import gru as gru_module
from torchrl_bamdp.utils import write_result_json

DEFAULT_OUT = Path(__file__).resolve().parent / "results" / "gru_backprop.json"
#: (batch, steps, input, hidden): RL2's MuJoCo minibatches (input 32 + 16 + 16 embeddings for
#: HalfCheetah, 3 x 32 for Walker; GRU 128), VariBAD's MuJoCo ELBO batch (10), RL2's GridNavi
#: minibatch (4 tasks of 60 steps, 32 + 8 + 8, GRU 64) and GridNavi's ELBO batch (100 tasks).
SHAPES = (
    (4, 60, 48, 64),
    (1, 400, 64, 128),
    (2, 400, 64, 128),
    (4, 400, 64, 128),
    (8, 400, 96, 128),
    (10, 400, 64, 128),
    (16, 400, 64, 128),
    (100, 60, 40, 64),
)
FAMILIES = ("cheetah_vel", "cheetah_dir", "walker_rand_params", "gridworld")


@contextlib.contextmanager
def fast_path_limit(limit: int) -> Iterator[None]:
    """``FAST_GRU_MAX_BATCH`` set to ``limit`` inside the block (0: ``nn.GRU`` everywhere)."""
    saved = gru_module.FAST_GRU_MAX_BATCH
    gru_module.FAST_GRU_MAX_BATCH = limit
    try:
        yield
    finally:
        gru_module.FAST_GRU_MAX_BATCH = saved


def interleaved(variants: dict[str, Callable[[], Any]], repeats: int) -> dict[str, list[float]]:
    """Warm every variant up once, then ``repeats`` rounds of one timed call of each."""
    for run in variants.values():
        run()
    seconds: dict[str, list[float]] = {name: [] for name in variants}
    for _ in range(repeats):
        for name, run in variants.items():
            start = time.perf_counter()
            run()
            seconds[name].append(time.perf_counter() - start)
    return seconds


def summarise(seconds: dict[str, list[float]], reference: str, fast: str) -> dict[str, Any]:
    """Medians in ms and the speed-up of ``fast`` over ``reference`` (ratio of medians, paired)."""
    paired = [r / f for r, f in zip(seconds[reference], seconds[fast], strict=True)]
    return {
        "ms": {name: [1e3 * s for s in values] for name, values in seconds.items()},
        "median_ms": {name: 1e3 * statistics.median(values) for name, values in seconds.items()},
        "speedup": statistics.median(seconds[reference]) / statistics.median(seconds[fast]),
        "speedup_paired": statistics.median(paired),
    }


def gru_variants(batch: int, steps: int, inputs: int, hidden: int) -> dict[str, Callable[[], Any]]:
    """``nn.GRU`` and the NumPy pass (forced on) on the same weights and inputs."""
    torch.manual_seed(0)
    gru = nn.GRU(inputs, hidden, batch_first=True)
    x = torch.randn(batch, steps, inputs, requires_grad=True)
    h0 = torch.zeros(1, batch, hidden)

    def torch_gru() -> None:
        out, _ = gru(x, h0)
        out.sum().backward()

    def numpy_gru() -> None:
        with fast_path_limit(batch):
            out, _ = gru_module.gru_sequence(gru, x, h0)
        out.sum().backward()

    return {"nn.GRU": torch_gru, "gru_sequence": numpy_gru}


def ppo_variants(family: str) -> tuple[dict[str, Callable[[], Any]], dict[str, Any]]:
    """``Trainer.ppo_update`` of RL2 on one collected batch, fast path off and on."""
    from torchrl_bamdp.trainers import Trainer
    from torchrl_bamdp.trainers.collection import TrainCollector

    config = compose_config(
        [
            f"env={family}",
            "algo=rl2",
            "train.eval_interval=0",
            "train.checkpoint_interval=0",
            "train.progress_bar=false",
            "train.figures=false",
            "logger=csv",
        ]
    )
    trainer = Trainer(config, Path(tempfile.mkdtemp(prefix="bamdp-gru-backprop-")))
    collector = TrainCollector(
        config, trainer.agent, trainer.train_env, config.frames_per_batch, frames=0, builder=None
    )
    batch = next(iter(collector))
    collector.shutdown()
    # Each timed update starts from the same weights, optimiser and random state.
    modules = nn.ModuleDict(trainer.agent.modules())
    state = copy.deepcopy(
        {"agent": modules.state_dict(), "optim": trainer.ppo_optimizer.state_dict()}
    )
    rng = torch.get_rng_state()

    def update(limit: int) -> Callable[[], Any]:
        def run() -> None:
            modules.load_state_dict(state["agent"])
            trainer.ppo_optimizer.load_state_dict(state["optim"])
            torch.set_rng_state(rng)
            with fast_path_limit(limit):
                trainer.ppo_update(batch.clone())

        return run

    ppo = config.algo.ppo
    info = {
        "epochs": ppo.epochs,
        "minibatches": ppo.minibatches,
        "tasks_per_minibatch": config.env.num_envs // ppo.minibatches,
        "steps_per_task": config.env.horizon,
        "gru_hidden": config.algo.encoder.hidden_size,
    }
    return {"nn.GRU": update(0), "gru_sequence": update(gru_module.FAST_GRU_MAX_BATCH)}, info


def main(argv: list[str] | None = None) -> dict[str, Any]:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--ppo-repeats", type=int, default=3)
    parser.add_argument("--families", nargs="*", default=list(FAMILIES), choices=FAMILIES)
    parser.add_argument("--steps", type=int, default=None, help="override the 400/60 steps")
    parser.add_argument("--out", type=Path, default=DEFAULT_OUT)
    args = parser.parse_args(argv)
    torch.set_num_threads(1)
    started = time.time()
    load_before = _loadavg()

    gru_rows = []
    for batch, steps, inputs, hidden in SHAPES:
        steps = args.steps or steps
        seconds = interleaved(gru_variants(batch, steps, inputs, hidden), args.repeats)
        row = {"batch": batch, "steps": steps, "input": inputs, "hidden": hidden}
        row.update(summarise(seconds, "nn.GRU", "gru_sequence"))
        gru_rows.append(row)
        print(
            f"GRU B={batch:3d} T={steps:3d} H={hidden}: nn.GRU {row['median_ms']['nn.GRU']:7.1f} ms"
            f"  gru_sequence {row['median_ms']['gru_sequence']:7.1f} ms"
            f"  speed-up {row['speedup']:.2f}x (paired {row['speedup_paired']:.2f}x)",
            flush=True,
        )

    ppo_rows = []
    for family in args.families:
        variants, info = ppo_variants(family)
        seconds = interleaved(variants, args.ppo_repeats)
        row = {"family": family, **info, **summarise(seconds, "nn.GRU", "gru_sequence")}
        ppo_rows.append(row)
        print(
            f"RL2 ppo_update {family} ({info['epochs']} x {info['minibatches']} minibatches of "
            f"{info['tasks_per_minibatch']} tasks): nn.GRU {row['median_ms']['nn.GRU'] / 1e3:.2f} s"
            f"  gru_sequence {row['median_ms']['gru_sequence'] / 1e3:.2f} s"
            f"  speed-up {row['speedup']:.2f}x (paired {row['speedup_paired']:.2f}x)",
            flush=True,
        )

    report = {
        "benchmark": "gru_backprop",
        "config": {
            "repeats": args.repeats,
            "ppo_repeats": args.ppo_repeats,
            "torch_num_threads": 1,
            "fast_gru_max_batch": gru_module.FAST_GRU_MAX_BATCH,
            "order": "interleaved rounds after one warm-up call of each variant",
        },
        "versions": {
            "torch": torch.__version__,
            "torchrl": torchrl.__version__,
            "tensordict": tensordict.__version__,
            "numpy": np.__version__,
        },
        "platform": {
            "platform": platform.platform(),
            "processor": _cpu_name(),
            "python": platform.python_version(),
            "loadavg_before": load_before,
            "loadavg_after": _loadavg(),
        },
        "wall_clock_s": time.time() - started,
        "gru": gru_rows,
        "ppo_update": ppo_rows,
    }
    write_result_json(args.out, report)
    print(f"wrote {args.out}")
    return report


def _loadavg() -> list[float] | None:
    try:
        return [round(v, 2) for v in os.getloadavg()]
    except OSError:
        return None


def _cpu_name() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor()


if __name__ == "__main__":
    main(sys.argv[1:])
