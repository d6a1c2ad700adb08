"""Training throughput on MuJoCo: the whole ``bamdp-train`` loop beside collection and simulators.

Issue 19 asks for the frames/s of the *full* VariBAD training loop on ``cheetah_vel`` (collection
+ PPO + ELBO, as ``bamdp-train`` runs it), beside collection alone and the raw simulators, at
16 and 64 envs, measured side by side in one run. Per ``--num-envs`` value, on ``--threads``
torch threads (default 1, ``train.num_threads``'s default):

* ``gym_sync_vector``   -- the reference (ratio 1.0): ``gymnasium.vector.SyncVectorEnv`` of
  ``HalfCheetah-v5``, random numpy actions, no torch (``collection_throughput.py`` (a)).
* ``mujoco_rollout_<k>`` -- MuJoCo's own batched stepping, ``mujoco.rollout.Rollout(nthread=k)``
  (k = 0: the calling thread; 1, 2: C worker threads without the GIL), closed loop: one call per
  vector step (``frame_skip`` physics steps of every env, random controls), the observation
  read back from the returned states. Dynamics only: no rewards, resets or tasks.
* ``varibad_collector`` -- collection as the trainer does it (``collection_throughput.py`` (b)).
* ``train_loop``        -- ``Trainer._train_frames`` on the packaged config (``env=cheetah_vel
  algo=varibad``: the tuned PPO, 10 epochs x 16 minibatches), one whole-task batch
  (``num_envs`` x 400 steps) per timed run: collection, trajectory buffer, PPO update, ELBO
  update (in its own thread beside PPO, ``train.parallel_updates``), schedules and CSV logging;
  meta-tests and checkpoints off (``train.eval_interval=0``, ``train.checkpoint_interval=0``).
  The wall-clock of the update (``Trainer._update``: PPO and ELBO, overlapped) is reported
  beside the rest (collection, buffer, logging), and the PPO and ELBO updates on their own.
* ``train_loop_original_ppo`` -- the same with the original's PPO sample reuse (2 epochs x 8
  minibatches, lr 7e-4): how much of the loop the tuned 160 PPO steps per batch cost.

Then, at the first ``--num-envs`` (16 by default), the loop in steady state with collection
in this process (``train.collector=single``) and in one worker process that collects the next
batch while the trainer updates on this one (``train.collector=process_async``): per round,
each runs ``--steady-batches`` batches in one ``Trainer._train_frames`` call, and its rate is
the median interval between the starts of two consecutive updates (a worker's start-up,
seconds, is reported apart: it is paid once per run). Rounds interleave the two;
``--steady-batches 0`` skips this part.

Every variant runs once untimed, then ``--repeats`` interleaved rounds (a b c ... a b c ...),
so that load from other processes hits all of them alike; reported are medians, ratios of
medians to the reference and per-round (paired) ratios. Targets (issue 19): ``train_loop`` at
16 envs >= 10,000 frames/s; ``varibad_collector`` >= 0.7 x ``gym_sync_vector`` at 16 envs.

Run it on an otherwise idle machine (about 2 minutes on 2 cores)::

    .venv/bin/python benchmarks/training_throughput.py
    .venv/bin/python benchmarks/training_throughput.py --num-envs 16 64 --repeats 3
"""

from __future__ import annotations

import argparse
import os
import platform
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import gymnasium
import mujoco
import numpy as np
import tensordict
import torch
import torchrl

sys.path.insert(0, str(Path(__file__).resolve().parent))
from collection_throughput import (  # noqa: E402  (a sibling script, not a package)
    GYM_ID,
    Variant,
    collector_variant,
    gym_sync_vector,
    measure_interleaved,
)

from torchrl_bamdp.cli import compose_config  # noqa: E402
from torchrl_bamdp.configs import Config  # noqa: E402
from torchrl_bamdp.utils import write_result_json  # noqa: E402

FAMILY = "cheetah_vel"
REFERENCE = "gym_sync_vector"
ORIGINAL_PPO = ["algo.ppo.epochs=2", "algo.ppo.minibatches=8", "algo.ppo.lr=0.0007"]
TARGETS = {
    "train_loop_frames_per_s": 10_000,
    "collector_ratio_to_reference": 0.7,
    "at_num_envs": 16,
}
DEFAULT_OUT = Path(__file__).resolve().parent / "results" / "training_throughput.json"
DESCRIPTIONS = {
    "gym_sync_vector": "gymnasium SyncVectorEnv, HalfCheetah-v5, random actions (reference)",
    "varibad_collector": "Collector: VariBAD belief transforms + policy (no updates)",
    "train_loop": "Trainer loop, tuned PPO 10 x 16: collection + PPO + ELBO + logging",
    "train_loop_original_ppo": "Trainer loop, the original's PPO 2 x 8 (lr 7e-4)",
}


def describe(name: str) -> str:
    """One line on what the variant ``name`` runs."""
    if name.startswith("mujoco_rollout_"):
        nthread = name.rpartition("_")[2]
        return f"mujoco.rollout, nthread={nthread}, closed loop, dynamics only"
    return DESCRIPTIONS[name]


def training_config(num_envs: int, extra: list[str], episode_length: int | None) -> Config:
    """The packaged ``bamdp-train`` config of ``cheetah_vel`` VariBAD, without meta-tests,
    checkpoints, progress bar or figures (they are not the loop being measured)."""
    overrides = [
        f"env={FAMILY}",
        "algo=varibad",
        f"env.num_envs={num_envs}",
        "train.eval_interval=0",
        "train.checkpoint_interval=0",
        "train.progress_bar=false",
        "train.figures=false",
        "logger=csv",
        "train.total_frames=100000000",  # the schedules' horizon; runs stop after their batches
        *extra,
    ]
    if episode_length is not None:
        overrides.append(f"env.episode_length={episode_length}")
    return compose_config(overrides)


class _Stopwatch:
    """Wraps ``obj.name`` (a bound method) and sums the wall-clock seconds of its calls."""

    def __init__(self, obj: Any, name: str) -> None:
        self.seconds = 0.0
        inner = getattr(obj, name)

        def timed(*args: Any, **kwargs: Any) -> Any:
            start = time.perf_counter()
            try:
                return inner(*args, **kwargs)
            finally:
                self.seconds += time.perf_counter() - start

        setattr(obj, name, timed)


def train_loop_variant(config: Config, phases: dict[str, list[float]]) -> Variant:
    """One whole-task batch of the trainer's own loop per run; phase seconds go to ``phases``."""
    from torchrl_bamdp.trainers import Trainer

    run_dir = Path(tempfile.mkdtemp(prefix="bamdp-training-throughput-"))
    trainer = Trainer(config, run_dir)
    update = _Stopwatch(trainer, "_update")
    ppo = _Stopwatch(trainer, "ppo_update")
    elbo = _Stopwatch(trainer, "elbo_update")
    frames_per_batch = config.frames_per_batch
    first = trainer.ppo_optimizer.param_groups[0]["params"][0]

    def adam_steps() -> int:
        state = trainer.ppo_optimizer.state.get(first, {})
        return int(state["step"]) if "step" in state else 0

    def run() -> int:
        before, steps_before = trainer.frames, adam_steps()
        marks = (update.seconds, ppo.seconds, elbo.seconds)
        start = time.perf_counter()
        trainer._train_frames(frames_per_batch)
        total = time.perf_counter() - start
        phases["total_s"].append(total)
        phases["update_s"].append(update.seconds - marks[0])
        phases["ppo_s"].append(ppo.seconds - marks[1])
        phases["elbo_s"].append(elbo.seconds - marks[2])
        phases["rest_s"].append(total - (update.seconds - marks[0]))
        phases["ppo_steps"].append(adam_steps() - steps_before)
        return trainer.frames - before

    def close() -> None:
        if trainer.logger is not None:
            trainer.logger.close()
        trainer.train_env.close()

    return Variant(run, close)


def mujoco_rollout_variant(num_envs: int, steps: int, nthread: int, seed: int) -> Variant:
    """``num_envs`` HalfCheetah simulators stepped by ``mujoco.rollout``, one call per step."""
    from mujoco import rollout

    sim = gymnasium.make(GYM_ID).unwrapped
    model, frame_skip = sim.model, int(sim.frame_skip)
    spec = mujoco.mjtState.mjSTATE_FULLPHYSICS
    nstate = mujoco.mj_stateSize(model, spec)
    data = mujoco.MjData(model)
    mujoco.mj_resetData(model, data)
    start_state = np.empty(nstate)
    mujoco.mj_getState(model, data, start_state, spec)
    state = np.tile(start_state, (num_envs, 1))
    control = np.zeros((num_envs, frame_skip, model.nu))
    out = np.zeros((num_envs, frame_skip, nstate))
    models = [model] * num_envs
    datas = [mujoco.MjData(model) for _ in range(max(1, nthread))]
    pool = rollout.Rollout(nthread=nthread)
    rng = np.random.default_rng(seed)
    low, high = sim.action_space.low, sim.action_space.high
    nq, nv = model.nq, model.nv
    sink: list[np.ndarray] = []

    def run() -> int:
        for _ in range(steps):
            control[:] = rng.uniform(low, high, (num_envs, 1, model.nu))
            pool.rollout(
                models,
                datas,
                state,
                control,
                nstep=frame_skip,
                skip_checks=True,
                state=out,
                control_spec=mujoco.mjtState.mjSTATE_CTRL.value,
            )
            state[:] = out[:, -1]
            # HalfCheetah-v5's observation: qpos without x, then qvel (state = time, qpos, qvel).
            sink[:] = [np.concatenate([state[:, 2 : 1 + nq], state[:, 1 + nq : 1 + nq + nv]], 1)]
        return num_envs * steps

    return Variant(run, pool.close)


def measure(num_envs: int, args: argparse.Namespace) -> dict[str, Any]:
    """Every variant at ``num_envs``, interleaved; per-variant medians, ratios and phases."""
    base = training_config(num_envs, [], args.episode_length)
    horizon = base.env.horizon
    phases: dict[str, dict[str, list[float]]] = {}
    variants: dict[str, Variant] = {
        "gym_sync_vector": gym_sync_vector(num_envs, horizon, base.seed),
    }
    for nthread in args.rollout_threads:
        variants[f"mujoco_rollout_{nthread}"] = mujoco_rollout_variant(
            num_envs, horizon, nthread, base.seed
        )
    with torch.no_grad():
        variants["varibad_collector"] = collector_variant(
            training_config(num_envs, ["algo.ppo.minibatches=1"], args.episode_length), horizon
        )
    for name, extra in (("train_loop", []), ("train_loop_original_ppo", ORIGINAL_PPO)):
        phases[name] = {
            k: [] for k in ("total_s", "update_s", "ppo_s", "elbo_s", "rest_s", "ppo_steps")
        }
        config = training_config(num_envs, extra, args.episode_length)
        variants[name] = train_loop_variant(config, phases[name])
    try:
        results = measure_interleaved_grad(variants, args.repeats)
    finally:
        for variant in variants.values():
            variant.close()
    reference = results[REFERENCE]
    for name, res in results.items():
        res["description"] = describe(name)
        res["ratio_to_reference"] = res["frames_per_s"] / reference["frames_per_s"]
        res["paired_ratio_median"] = statistics.median(
            f / r
            for f, r in zip(res["frames_per_s_all"], reference["frames_per_s_all"], strict=True)
        )
    for name, timing in phases.items():
        timed = {k: v[1:] for k, v in timing.items()}  # the first call is the warm-up
        results[name]["phases_median_s"] = {k: statistics.median(v) for k, v in timed.items()}
        results[name]["phases_all_s"] = timed
    return {"horizon": horizon, "frames_per_batch": num_envs * horizon, "results": results}


def measure_interleaved_grad(variants: dict[str, Variant], repeats: int) -> dict[str, Any]:
    """:func:`collection_throughput.measure_interleaved`, with the collector under no_grad and
    the training loops with gradients (the trainer's collector switches them off itself)."""
    wrapped = {}
    for name, variant in variants.items():
        if name == "varibad_collector":
            wrapped[name] = Variant(_no_grad(variant.run), variant.close)
        else:
            wrapped[name] = variant
    return measure_interleaved(wrapped, repeats)


def _no_grad(fn: Callable[[], int]) -> Callable[[], int]:
    def run() -> int:
        with torch.no_grad():
            return fn()

    return run


def format_table(num_envs: int, measured: dict[str, Any]) -> str:
    lines = [
        f"{num_envs} envs ({measured['frames_per_batch']} frames per training batch):",
        f"  {'variant':<26} {'frames/s':>10} {'x ref':>7} {'paired':>7}  what",
    ]
    for name, res in measured["results"].items():
        lines.append(
            f"  {name:<26} {res['frames_per_s']:>10,.0f} {res['ratio_to_reference']:>7.3f} "
            f"{res['paired_ratio_median']:>7.3f}  {res['description']}"
        )
    for name, res in measured["results"].items():
        if "phases_median_s" in res:
            p = res["phases_median_s"]
            lines.append(
                f"  {name}: {p['total_s']:.2f} s per batch = update {p['update_s']:.2f} s "
                f"(PPO {p['ppo_s']:.2f} s, ELBO {p['elbo_s']:.2f} s beside it) + collection, "
                f"buffer and logging {p['rest_s']:.2f} s"
            )
    return "\n".join(lines)


def steady_state(num_envs: int, args: argparse.Namespace) -> dict[str, Any]:
    """``train.collector=single`` against ``process_async``: batches per second in steady state
    (median interval between the starts of two consecutive updates), interleaved rounds."""
    from torchrl_bamdp.trainers import Trainer

    collectors = ("single", "process_async")
    trainers = {}
    for collector in collectors:
        config = training_config(num_envs, [f"train.collector={collector}"], args.episode_length)
        trainers[collector] = Trainer(
            config, Path(tempfile.mkdtemp(prefix="bamdp-training-throughput-"))
        )
    frames_per_batch = trainers["single"].config.frames_per_batch
    intervals: dict[str, list[float]] = {c: [] for c in collectors}
    startup: dict[str, list[float]] = {c: [] for c in collectors}
    per_round: dict[str, list[float]] = {c: [] for c in collectors}
    try:
        for _ in range(args.repeats):
            for collector, trainer in trainers.items():
                starts: list[float] = []
                update = trainer._update

                def timed(*a: Any, _update=update, _starts=starts, **k: Any) -> Any:
                    _starts.append(time.perf_counter())
                    return _update(*a, **k)

                trainer._update = timed
                begin = time.perf_counter()
                try:
                    trainer._train_frames(args.steady_batches * frames_per_batch)
                finally:
                    trainer._update = update
                gaps = [b - a for a, b in zip(starts[:-1], starts[1:], strict=True)]
                intervals[collector] += gaps
                per_round[collector].append(statistics.median(gaps))
                startup[collector].append(starts[0] - begin)
    finally:
        for trainer in trainers.values():
            if trainer.logger is not None:
                trainer.logger.close()
            trainer.train_env.close()
    results = {}
    for collector in collectors:
        interval = statistics.median(intervals[collector])
        results[collector] = {
            "seconds_per_batch": interval,
            "frames_per_s": frames_per_batch / interval,
            "seconds_per_batch_per_round": per_round[collector],
            "startup_s_median": statistics.median(startup[collector]),
        }
    paired = [s / a for s, a in zip(per_round["single"], per_round["process_async"], strict=True)]
    return {
        "num_envs": num_envs,
        "frames_per_batch": frames_per_batch,
        "batches_per_run": args.steady_batches,
        "results": results,
        "process_async_speedup": results["process_async"]["frames_per_s"]
        / results["single"]["frames_per_s"],
        "process_async_speedup_paired": statistics.median(paired),
    }


def format_steady(steady: dict[str, Any]) -> str:
    lines = [
        f"{steady['num_envs']} envs, steady state ({steady['batches_per_run']} batches per run):"
    ]
    for collector, res in steady["results"].items():
        lines.append(
            f"  train.collector={collector:<14} {res['frames_per_s']:>8,.0f} frames/s "
            f"({res['seconds_per_batch']:.2f} s per batch; "
            f"start-up {res['startup_s_median']:.1f} s)"
        )
    lines.append(
        f"  process_async / single: {steady['process_async_speedup']:.2f}x "
        f"(paired {steady['process_async_speedup_paired']:.2f}x)"
    )
    return "\n".join(lines)


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--num-envs", type=int, nargs="+", default=[16, 64])
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--threads", type=int, default=1, help="torch threads")
    parser.add_argument("--rollout-threads", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--episode-length", type=int, default=None, help="tests: shorter BAMDP")
    parser.add_argument(
        "--steady-batches",
        type=int,
        default=8,
        help="batches per steady-state run, single vs process_async (0 skips)",
    )
    parser.add_argument("--out", type=Path, default=DEFAULT_OUT)
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> dict[str, Any]:
    """Run the benchmark, print the tables, write the JSON report and return it."""
    args = parse_args(argv)
    if min(*args.num_envs, args.repeats, args.threads) < 1:
        raise SystemExit("--num-envs, --repeats and --threads must be >= 1")
    if args.episode_length is not None and args.episode_length < 1:
        raise SystemExit("--episode-length must be >= 1")
    if any(k < 0 for k in args.rollout_threads):
        raise SystemExit("--rollout-threads must be >= 0")
    if args.steady_batches == 1 or args.steady_batches < 0:
        raise SystemExit(
            f"--steady-batches must be 0 (skip) or >= 2: a rate needs two updates "
            f"(got {args.steady_batches})"
        )
    previous_threads = torch.get_num_threads()
    torch.set_num_threads(args.threads)
    load_start = os.getloadavg()
    wall_start = time.perf_counter()
    try:
        measured = {str(n): measure(n, args) for n in args.num_envs}
        steady = steady_state(args.num_envs[0], args) if args.steady_batches else None
    finally:
        torch.set_num_threads(previous_threads)
    wall = time.perf_counter() - wall_start
    load_end = os.getloadavg()

    at = str(TARGETS["at_num_envs"])
    targets: dict[str, Any] = {**TARGETS}
    if at in measured:
        res = measured[at]["results"]
        loop = res["train_loop"]["frames_per_s"]
        ratio = res["varibad_collector"]["ratio_to_reference"]
        targets["train_loop_measured"] = loop
        targets["train_loop_met"] = loop >= TARGETS["train_loop_frames_per_s"]
        targets["collector_ratio_measured"] = ratio
        targets["collector_ratio_met"] = ratio >= TARGETS["collector_ratio_to_reference"]
    report = {
        "benchmark": "training_throughput",
        "config": {
            "env": FAMILY,
            "gym_id": GYM_ID,
            "num_envs": args.num_envs,
            "episode_length": args.episode_length,
            "repeats": args.repeats,
            "order": "interleaved rounds after one warm-up run of each variant",
            "statistic": "median over rounds; paired = median of per-round ratios to the reference",
            "torch_num_threads": args.threads,
            "rollout_threads": args.rollout_threads,
            "train_loop": "Trainer._train_frames, one whole-task batch per run, packaged config "
            "env=cheetah_vel algo=varibad, meta-tests and checkpoints off",
            "original_ppo_overrides": ORIGINAL_PPO,
        },
        "versions": {
            "python": platform.python_version(),
            "torch": torch.__version__,
            "torchrl": torchrl.__version__,
            "tensordict": tensordict.__version__,
            "gymnasium": gymnasium.__version__,
            "mujoco": mujoco.__version__,
        },
        "platform": {
            "system": platform.platform(),
            "cpu_count": os.cpu_count(),
            "load_average_start": list(load_start),
            "load_average_end": list(load_end),
        },
        "wall_clock_s": wall,
        "reference": REFERENCE,
        "measured": measured,
        "steady_state": steady,
        "targets": targets,
    }
    print(
        f"Training throughput, {FAMILY}, median of {args.repeats} interleaved rounds, "
        f"{args.threads} torch thread(s), torch {torch.__version__}, torchrl {torchrl.__version__}"
    )
    for n, m in measured.items():
        print(format_table(int(n), m))
    if steady is not None:
        print(format_steady(steady))
    if "train_loop_measured" in targets:
        print(
            f"targets at {at} envs: train loop {targets['train_loop_measured']:,.0f} frames/s "
            f"(target {TARGETS['train_loop_frames_per_s']:,}: "
            f"{'MET' if targets['train_loop_met'] else 'NOT met'}); collector / gym "
            f"{targets['collector_ratio_measured']:.3f} (target "
            f"{TARGETS['collector_ratio_to_reference']}: "
            f"{'MET' if targets['collector_ratio_met'] else 'NOT met'})"
        )
    print(f"wall clock {wall:.1f} s; load average {load_start[0]:.2f} -> {load_end[0]:.2f}")
    write_result_json(args.out, report)
    print(f"wrote {args.out}")
    return report


if __name__ == "__main__":
    main(sys.argv[1:])
