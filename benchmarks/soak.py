"""Soak test: does a long VariBAD GridNavi run keep a flat memory footprint?

Trains the default GridNavi VariBAD configuration (the packaged Hydra configs, as
``bamdp-train`` would, with the progress bar off) for ``--frames`` frames (default 1M) and
samples the process's resident set size (``VmRSS`` from ``/proc/self/status``; no psutil
needed) once per iteration, right after the PPO update (a wrapper around
``Trainer.ppo_update``), and the number of live Python objects every ``--objects-every``
iterations. The run directory is a temporary one unless ``--run-dir`` is given.

Reported (printed, and written as JSON to ``benchmarks/results/soak.json``): RSS after the first
iteration (start), at the last iteration (end), after ``train()`` returned (final evaluation,
checkpoint, logger closed), the maximum and the kernel's peak (``VmHWM``); the least-squares
slope of RSS against frames over the second half of the run (MB per million frames) and the
growth it implies over that half in percent of the RSS there; ``flat`` is true when that growth
is below ``--flat-threshold`` (5 %). Also the config, seed, versions, platform, load average,
frames, iterations and wall-clock time (CleanRL style), and the whole RSS series.

Run it with::

    .venv/bin/python benchmarks/soak.py                  # 1M frames, a few minutes on 2 cores
    .venv/bin/python benchmarks/soak.py --frames 3000000 --override env.num_envs=16
"""

from __future__ import annotations

import argparse
import gc
import os
import platform
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

DEFAULT_OUT = Path(__file__).resolve().parent / "results" / "soak.json"
MB = 1024 * 1024


def proc_status_mb(field: str = "VmRSS") -> float:
    """A memory field of ``/proc/self/status`` (``VmRSS``, ``VmHWM``, ...) in MiB.

    Examples
    --------
    >>> proc_status_mb("VmRSS") > 0
    True
    """
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith(field + ":"):
                return int(line.split()[1]) * 1024 / MB  # the kernel reports kB
    raise KeyError(f"{field} not in /proc/self/status")


def least_squares_slope(xs: list[float], ys: list[float]) -> float:
    """Slope of the least-squares line through ``(xs, ys)`` (0 with fewer than 2 points).

    Examples
    --------
    >>> least_squares_slope([0, 1, 2], [1.0, 3.0, 5.0])
    2.0
    """
    n = len(xs)
    if n < 2:
        return 0.0
    mx, my = sum(xs) / n, sum(ys) / n
    var = sum((x - mx) ** 2 for x in xs)
    if var == 0:
        return 0.0
    return sum((x - mx) * (y - my) for x, y in zip(xs, ys, strict=True)) / var


def summarize(samples: list[dict[str, float]], threshold_pct: float) -> dict[str, Any]:
    """RSS start/end/max and the second-half slope and growth of a list of samples.

    Each sample holds ``frames`` and ``rss_mb``. The second half is the samples taken after
    half of the last sample's frames; its growth is ``slope * span / rss_at_its_start``.

    Examples
    --------
    >>> s = [{"frames": f, "rss_mb": 100.0 + f / 1e6} for f in (1e5, 5e5, 6e5, 1e6)]
    >>> out = summarize(s, 5.0)
    >>> round(out["slope_mb_per_million_frames"], 6), out["flat"]
    (1.0, True)
    """
    frames = [s["frames"] for s in samples]
    rss = [s["rss_mb"] for s in samples]
    half = frames[-1] / 2
    second = [(f, r) for f, r in zip(frames, rss, strict=True) if f > half] or [
        (frames[-1], rss[-1])
    ]
    xs = [f / 1e6 for f, _ in second]
    ys = [r for _, r in second]
    slope = least_squares_slope(xs, ys)
    span = xs[-1] - xs[0]
    growth_pct = 100.0 * slope * span / ys[0] if ys[0] else 0.0
    return {
        "rss_start_mb": rss[0],
        "rss_end_mb": rss[-1],
        "rss_max_mb": max(rss),
        "rss_min_mb": min(rss),
        "second_half_samples": len(second),
        "second_half_rss_first_mb": ys[0],
        "second_half_rss_last_mb": ys[-1],
        "slope_mb_per_million_frames": slope,
        "second_half_growth_pct": growth_pct,
        "flat_threshold_pct": threshold_pct,
        "flat": growth_pct < threshold_pct,
    }


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--frames", type=int, default=1_000_000, help="frames to train")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument(
        "--override",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="extra Hydra override, as on the bamdp-train command line (repeatable)",
    )
    parser.add_argument("--run-dir", type=Path, default=None, help="keep the run here")
    parser.add_argument("--objects-every", type=int, default=10, help="gc object count period")
    parser.add_argument("--print-every", type=int, default=20, help="progress line period")
    parser.add_argument("--flat-threshold", type=float, default=5.0, help="percent")
    parser.add_argument("--out", type=Path, default=DEFAULT_OUT)
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> dict[str, Any]:
    """Run the soak test; print a table, write the JSON report and return it.

    Examples
    --------
    >>> report = main(["--frames", "240", "--override", "env.num_envs=4"])  # doctest: +SKIP
    >>> report["frames"], report["memory"]["flat"]  # doctest: +SKIP
    (240, True)
    """
    args = parse_args(argv)
    import tensordict
    import torch
    import torchrl

    from torchrl_bamdp.cli import compose_config
    from torchrl_bamdp.configs import config_to_dict
    from torchrl_bamdp.trainers import Trainer
    from torchrl_bamdp.utils import write_result_json

    tmp = None
    run_dir = args.run_dir
    if run_dir is None:
        tmp = tempfile.TemporaryDirectory(prefix="bamdp-soak-")
        run_dir = Path(tmp.name) / "run"
    overrides = [
        f"train.total_frames={args.frames}",
        "train.progress_bar=false",
        f"seed={args.seed}",
        *args.override,
        f"run_dir={run_dir}",
    ]
    config = compose_config(overrides)
    load_start = os.getloadavg()
    rss_import = proc_status_mb()
    trainer = Trainer(config, run_dir)
    rss_built = proc_status_mb()

    samples: list[dict[str, float]] = []
    objects: list[dict[str, int]] = []
    start = time.perf_counter()
    ppo_update = trainer.ppo_update

    def sampled_ppo_update(batch):
        metrics = ppo_update(batch)
        samples.append(
            {
                "iteration": trainer.iteration,
                "frames": trainer.frames,
                "rss_mb": round(proc_status_mb(), 2),
                "seconds": round(time.perf_counter() - start, 3),
            }
        )
        if trainer.iteration == 1 or trainer.iteration % args.objects_every == 0:
            objects.append({"iteration": trainer.iteration, "objects": len(gc.get_objects())})
        if args.print_every and trainer.iteration % args.print_every == 0:
            s = samples[-1]
            print(
                f"soak: iteration {s['iteration']}, {s['frames']} frames, RSS {s['rss_mb']:.1f} MB,"
                f" {s['seconds']:.0f} s",
                flush=True,
            )
        return metrics

    trainer.ppo_update = sampled_ppo_update
    try:
        result = trainer.train()
    finally:
        wall = time.perf_counter() - start
        if tmp is not None:
            tmp.cleanup()
    rss_after = proc_status_mb()

    summary = summarize(samples, args.flat_threshold)
    summary.update(
        {
            "rss_after_import_mb": rss_import,
            "rss_after_trainer_built_mb": rss_built,
            "rss_after_train_mb": rss_after,
            "rss_peak_vmhwm_mb": proc_status_mb("VmHWM"),
            "python_objects_start": objects[0]["objects"] if objects else None,
            "python_objects_end": objects[-1]["objects"] if objects else None,
        }
    )
    report = {
        "benchmark": "soak",
        "config": {
            "frames": args.frames,
            "overrides": overrides[:-1],  # the run_dir is a temporary path
            "trainer": config_to_dict(config),
        },
        "seed": args.seed,
        "versions": {
            "python": platform.python_version(),
            "torch": torch.__version__,
            "torchrl": torchrl.__version__,
            "tensordict": tensordict.__version__,
        },
        "platform": {
            "system": platform.platform(),
            "cpus": os.cpu_count(),
            "torch_threads": torch.get_num_threads(),
            "load_average_start": list(load_start),
            "load_average_end": list(os.getloadavg()),
        },
        "frames": result["frames"],
        "iterations": result["iterations"],
        "wall_clock_s": wall,
        "frames_per_s": result["frames"] / wall if wall > 0 else None,
        "final_eval_return": result["eval"]["total_mean"] if result["eval"] else None,
        "memory": summary,
        "samples": {
            "columns": ["iteration", "frames", "rss_mb", "seconds"],
            "rows": [[s["iteration"], s["frames"], s["rss_mb"], s["seconds"]] for s in samples],
        },
        "python_objects": objects,
    }

    print(f"soak: {result['frames']} frames, {result['iterations']} iterations, {wall:.0f} s")
    print("| quantity | value |\n|---|---|")
    for key in (
        "rss_start_mb",
        "rss_end_mb",
        "rss_max_mb",
        "rss_after_train_mb",
        "rss_peak_vmhwm_mb",
        "slope_mb_per_million_frames",
        "second_half_growth_pct",
    ):
        print(f"| {key} | {summary[key]:.2f} |")
    print(
        f"| python_objects start -> end | {summary['python_objects_start']} -> "
        f"{summary['python_objects_end']} |"
    )
    verdict = "flat" if summary["flat"] else "GROWING"
    print(
        f"memory is {verdict}: {summary['second_half_growth_pct']:+.2f} % over the second half "
        f"(threshold {args.flat_threshold:g} %)"
    )
    args.out.parent.mkdir(parents=True, exist_ok=True)
    write_result_json(args.out, report)
    print(f"wrote {args.out}")
    return report


if __name__ == "__main__":
    main(sys.argv[1:])
