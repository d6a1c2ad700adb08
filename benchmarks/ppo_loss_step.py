"""PPO through TorchRL's ``ClipPPOLoss.forward`` vs :class:`TensorClipPPOLoss`, side by side.

``TensorClipPPOLoss`` (``torchrl_bamdp/objectives/ppo.py``) is a ``ClipPPOLoss`` whose forward
reads the minibatch's tensors and calls the networks directly; the trainer uses it since
2026-12-07. This script measures what it buys, per family, on the packaged configs
(``algo=varibad``; ``cheetah_vel`` with 16 envs), on one torch thread:

* ``ppo_update``  -- one ``Trainer.ppo_update`` on one collected batch (GridNavi: 4 epochs x 16
  minibatches of 240 steps; cheetah_vel, tuned: 10 x 16 of 400), the trainer's PPO loss being
  ``ClipPPOLoss(functional=False)`` with the same arguments (the trainer then permutes every
  entry of the batch each epoch, as before 2026-12-07), or ``TensorClipPPOLoss`` (only the
  entries it reads: ``minibatch_keys``);
* ``train_iteration`` -- one whole ``Trainer._train_frames`` batch (collection, buffer, PPO,
  ELBO beside it, logging; meta-tests and checkpoints off) with each loss.

Rounds interleave the two losses after one warm-up call of each; reported are the medians
and the median of the per-round ratios (``clip_ppo_loss / tensor_clip_ppo_loss``: > 1 is
faster). Before timing, it checks that the two losses give the same parameters after one PPO
update from the same state and random stream (max abs difference, reported). Run it on an
otherwise idle machine (about 3 minutes on 2 cores)::

    .venv/bin/python benchmarks/ppo_loss_step.py
    .venv/bin/python benchmarks/ppo_loss_step.py --families gridworld --repeats 5
"""

from __future__ import annotations

import argparse
import copy
import os
import statistics
import tempfile
import time
from pathlib import Path
from typing import Any

import torch
from torchrl.objectives import ClipPPOLoss

from torchrl_bamdp.cli import compose_config
from torchrl_bamdp.demo import machine_info
from torchrl_bamdp.objectives import TensorClipPPOLoss
from torchrl_bamdp.trainers import Trainer
from torchrl_bamdp.trainers.trainer import ppo_loss_arguments
from torchrl_bamdp.utils import write_result_json

DEFAULT_OUT = Path(__file__).resolve().parent / "results" / "ppo_loss_step.json"
FAMILIES = {
    "gridworld": ["env=gridworld"],
    "cheetah_vel": ["env=cheetah_vel", "env.num_envs=16"],
}
LOSSES = ("clip_ppo_loss", "tensor_clip_ppo_loss")


def make_trainer(family: str, num_envs: int | None = None):
    envs = [] if num_envs is None else [f"env.num_envs={num_envs}"]
    config = compose_config(
        [
            "algo=varibad",
            *FAMILIES[family],
            *envs,
            "train.eval_interval=0",
            "train.checkpoint_interval=0",
            "train.progress_bar=false",
            "train.figures=false",
            "logger=csv",
        ]
    )
    trainer = Trainer(config, Path(tempfile.mkdtemp(prefix="bamdp-ppo-loss-step-")))
    return config, trainer


def loss_modules(trainer, config) -> dict[str, ClipPPOLoss]:
    """Both losses with the trainer's arguments (the trainer's own is the second)."""
    reference = ClipPPOLoss(
        trainer.agent.actor,
        trainer.agent.critic,
        functional=False,
        **ppo_loss_arguments(config.algo.ppo),
    )
    assert isinstance(trainer.ppo_loss, TensorClipPPOLoss)
    return {"clip_ppo_loss": reference, "tensor_clip_ppo_loss": trainer.ppo_loss}


def same_update(trainer, losses: dict[str, ClipPPOLoss], batch) -> float:
    """Max abs parameter difference after one PPO update with each loss from the same state."""
    networks = torch.nn.ModuleList([trainer.agent.actor, trainer.agent.critic])
    start_params = copy.deepcopy(networks.state_dict())
    start_optim = copy.deepcopy(trainer.ppo_optimizer.state_dict())
    after = {}
    for name, loss in losses.items():
        networks.load_state_dict(start_params)
        # A copy each time: Optimizer.load_state_dict keeps the given state tensors (on the
        # same device and dtype) and Adam then updates them in place.
        trainer.ppo_optimizer.load_state_dict(copy.deepcopy(start_optim))
        trainer.ppo_loss = loss
        torch.manual_seed(0)
        trainer.ppo_update(batch.clone())
        after[name] = copy.deepcopy(networks.state_dict())
    networks.load_state_dict(start_params)
    trainer.ppo_optimizer.load_state_dict(copy.deepcopy(start_optim))
    return max(
        float((after[LOSSES[0]][k].double() - after[LOSSES[1]][k].double()).abs().max())
        for k in start_params
    )


def measure(family: str, repeats: int, num_envs: int | None = None) -> dict[str, Any]:
    config, trainer = make_trainer(family, num_envs)
    captured = {}
    update = trainer.ppo_update

    def capture(batch):
        captured["batch"] = batch.clone()
        return update(batch)

    trainer.ppo_update = capture
    trainer._train_frames(config.frames_per_batch)  # one batch to measure on; warms up
    trainer.ppo_update = update
    batch = captured["batch"]
    losses = loss_modules(trainer, config)
    max_diff = same_update(trainer, losses, batch)

    times: dict[str, dict[str, list[float]]] = {
        part: {name: [] for name in LOSSES} for part in ("ppo_update", "train_iteration")
    }
    for round_index in range(repeats + 1):  # round 0 is the warm-up
        for name in LOSSES:
            trainer.ppo_loss = losses[name]
            start = time.perf_counter()
            trainer.ppo_update(batch.clone())
            ppo_s = time.perf_counter() - start
            start = time.perf_counter()
            trainer._train_frames(config.frames_per_batch)
            iteration_s = time.perf_counter() - start
            if round_index:
                times["ppo_update"][name].append(ppo_s)
                times["train_iteration"][name].append(iteration_s)
    trainer.ppo_loss = losses["tensor_clip_ppo_loss"]
    trainer.train_env.close()
    if trainer.logger is not None:
        trainer.logger.close()

    frames = config.frames_per_batch
    result: dict[str, Any] = {
        "frames_per_batch": frames,
        "ppo_steps_per_update": config.algo.ppo.epochs * config.algo.ppo.minibatches,
        "max_abs_param_diff_after_one_update": max_diff,
    }
    for part, by_loss in times.items():
        seconds = {name: statistics.median(v) for name, v in by_loss.items()}
        paired = statistics.median(
            a / b for a, b in zip(by_loss[LOSSES[0]], by_loss[LOSSES[1]], strict=True)
        )
        result[part] = {
            "seconds": by_loss,
            "median_s": seconds,
            "frames_per_s": {name: frames / s for name, s in seconds.items()},
            "paired_ratio_clip_over_tensor": paired,
        }
    return result


def format_table(measured: dict[str, Any]) -> str:
    lines = [
        "| family | part | ClipPPOLoss s | TensorClipPPOLoss s | paired ratio | "
        "frames/s (Clip -> Tensor) |",
        "|---|---|---|---|---|---|",
    ]
    for family, res in measured.items():
        for part in ("ppo_update", "train_iteration"):
            r = res[part]
            fps = r["frames_per_s"]
            lines.append(
                f"| {family} | {part} | {r['median_s'][LOSSES[0]]:.3f} | "
                f"{r['median_s'][LOSSES[1]]:.3f} | {r['paired_ratio_clip_over_tensor']:.2f} | "
                f"{fps[LOSSES[0]]:,.0f} -> {fps[LOSSES[1]]:,.0f} |"
            )
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> dict[str, Any]:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--families", nargs="+", choices=sorted(FAMILIES), default=list(FAMILIES))
    parser.add_argument("--repeats", type=int, default=5, help="timed rounds (>= 1)")
    parser.add_argument(
        "--num-envs", type=int, default=None, help="instead of the packaged configs' (tests)"
    )
    parser.add_argument("--out", type=Path, default=DEFAULT_OUT)
    args = parser.parse_args(argv)
    if args.repeats < 1:
        parser.error(f"--repeats must be >= 1 (got {args.repeats})")
    if args.num_envs is not None and args.num_envs < 1:
        parser.error(f"--num-envs must be >= 1 (got {args.num_envs})")
    previous_threads = torch.get_num_threads()
    torch.set_num_threads(1)
    load_start = os.getloadavg()
    wall = time.perf_counter()
    try:
        measured = {f: measure(f, args.repeats, args.num_envs) for f in args.families}
    finally:
        torch.set_num_threads(previous_threads)
    report = {
        "benchmark": "ppo_loss_step",
        "config": {
            "families": {f: ["algo=varibad", *FAMILIES[f]] for f in args.families},
            "num_envs": args.num_envs or "packaged",
            "repeats": args.repeats,
            "order": "interleaved rounds after one warm-up round",
            "statistic": "median over rounds; paired = median of per-round ratios",
            "torch_num_threads": 1,
        },
        "machine": machine_info(),
        "load_average": {"start": list(load_start), "end": list(os.getloadavg())},
        "wall_clock_s": time.perf_counter() - wall,
        "measured": measured,
    }
    print(format_table(measured))
    for family, res in measured.items():
        diff = res["max_abs_param_diff_after_one_update"]
        print(f"{family}: max |param diff| after one update {diff:.2e}")
    write_result_json(args.out, report)
    print(f"wrote {args.out}")
    return report


if __name__ == "__main__":
    main()
