"""``make demo``: train VariBAD on GridNavi briefly and compare it with the exact references.

Prints the meta-test return of each inner episode for the trained agent, a random policy and
the exact Bayes-optimal policy (dynamic programming), and leaves a full run directory (config,
metrics CSV, checkpoint) under ``runs/demo-<time>``.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import time
from pathlib import Path
from typing import Any

import torch

from torchrl_bamdp.configs import Config, config_to_dict, dotted_leaves, load_config
from torchrl_bamdp.policies import BayesOptimalGridNavi, GridNaviSpec, uniform_random_policy
from torchrl_bamdp.trainers import Trainer
from torchrl_bamdp.utils import PACKAGE_ROOT, write_result_json

#: The committed spread of the demo over seeds (``benchmarks/demo_spread.py`` writes it).
SPREAD_FILE = PACKAGE_ROOT / "benchmarks" / "results" / "demo_spread.json"


def demo_config(frames: int, seed: int) -> Config:
    """The demo's configuration: the package defaults (VariBAD on GridNavi), ``frames`` frames.

    Examples
    --------
    >>> cfg = demo_config(3_000_000, seed=2)
    >>> cfg.env.name, cfg.algo.name, cfg.seed, cfg.train.total_frames
    ('gridworld', 'varibad', 2, 3000000)
    """
    return load_config({"seed": seed, "train": {"total_frames": frames, "eval_interval": 50}})


def demo_config_record(frames: int) -> dict[str, Any]:
    """The demo's resolved configuration at ``frames`` as a flat ``{"a.b": value}`` dict, less
    what differs per run (seed, run directory): what a reference spread records it trained.

    Examples
    --------
    >>> record = demo_config_record(3_000_000)
    >>> record["env.name"], record["train.total_frames"], "seed" in record
    ('gridworld', 3000000, False)
    """
    # through JSON, as the committed record is read back (tuples become lists)
    record = dotted_leaves(json.loads(json.dumps(config_to_dict(demo_config(frames, seed=0)))))
    for per_run in ("seed", "run_dir", "resume"):
        record.pop(per_run, None)
    return record


def config_differences(reference: dict[str, Any], current: dict[str, Any]) -> list[str]:
    """``field: reference -> current`` for every field where two config records differ.

    Examples
    --------
    >>> config_differences({"env.bamdp_end": "truncated", "seed": 0},
    ...                    {"env.bamdp_end": "terminated", "seed": 0})
    ["env.bamdp_end: 'truncated' -> 'terminated'"]
    """

    def shown(record: dict[str, Any], key: str) -> str:
        return repr(record[key]) if key in record else "(absent)"

    return [
        f"{key}: {shown(reference, key)} -> {shown(current, key)}"
        for key in sorted(set(reference) | set(current))
        if key not in reference or key not in current or reference[key] != current[key]
    ]


def machine_info() -> dict[str, Any]:
    """What produced a number: CPU model and count, platform, and the locked package versions.

    Examples
    --------
    >>> sorted(machine_info())
    ['constraints_sha256', 'cpu', 'cpus', 'platform', 'versions']
    """
    import platform

    import tensordict
    import torchrl

    cpu = platform.processor() or platform.machine()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    lock = PACKAGE_ROOT / "constraints.txt"
    digest = hashlib.sha256(lock.read_bytes()).hexdigest()[:12] if lock.exists() else None
    return {
        "cpu": cpu,
        "cpus": os.cpu_count(),
        "platform": platform.platform(),
        "versions": {
            "python": platform.python_version(),
            "torch": torch.__version__,
            "torchrl": torchrl.__version__,
            "tensordict": tensordict.__version__,
        },
        "constraints_sha256": digest,
    }


def reference_lines(path: Path = SPREAD_FILE) -> list[str]:
    """The demo's reference: the committed per-episode spread over seeds, as printable lines.

    Examples
    --------
    >>> import json, tempfile
    >>> f = Path(tempfile.mkdtemp()) / "spread.json"
    >>> _ = f.write_text(json.dumps({"frames": 3000000, "seeds": [0, 1], "date": "2026-12-01",
    ...     "machine": {"cpu": "some CPU", "cpus": 2}, "commit": "abc",
    ...     "per_episode": {"min": [1.0, 2.0], "median": [1.5, 2.5], "max": [2.0, 3.0]}}))
    >>> print("\\n".join(reference_lines(f)))
    Reference: 2 seeds (0-1) of this demo at 3,000,000 frames
    (2026-12-01, some CPU, 2 cores, commit abc):
    | reference | episode 1 | episode 2 |
    |---|---|---|
    | min over seeds | 1.00 | 2.00 |
    | median over seeds | 1.50 | 2.50 |
    | max over seeds | 2.00 | 3.00 |
    WARNING: this reference records no config (older defaults?); rerun benchmarks/demo_spread.py
    """
    if not path.exists():
        return [f"(no committed reference spread at {path}; benchmarks/demo_spread.py writes it)"]
    spread = json.loads(path.read_text())
    seeds = spread["seeds"]
    machine = spread["machine"]
    stats = spread["per_episode"]
    lines = [
        f"Reference: {len(seeds)} seeds ({min(seeds)}-{max(seeds)}) of this demo at "
        f"{spread['frames']:,} frames",
        f"({spread['date']}, {machine['cpu']}, {machine['cpus']} cores, "
        f"commit {spread['commit']}):",
        "| reference | " + " | ".join(f"episode {k + 1}" for k in range(len(stats["min"]))) + " |",
        "|---" * (len(stats["min"]) + 1) + "|",
    ]
    for name in ("min", "median", "max"):
        lines.append(f"| {name} over seeds | " + " | ".join(f"{v:.2f}" for v in stats[name]) + " |")
    recorded = spread.get("config")
    if recorded is None:
        lines.append(
            "WARNING: this reference records no config (older defaults?); "
            "rerun benchmarks/demo_spread.py"
        )
    else:
        changed = config_differences(recorded, demo_config_record(spread["frames"]))
        if changed:
            shown = "; ".join(changed[:5]) + ("; ..." if len(changed) > 5 else "")
            lines.append(
                f"WARNING: this reference was trained with another config than this demo's "
                f"({len(changed)} fields, reference -> now: {shown}); "
                "benchmarks/demo_spread.py regenerates it."
            )
    return lines


def main(argv: list[str] | None = None) -> dict[str, Any]:
    """Train, meta-test and print the comparison table (``make demo``).

    Parameters
    ----------
    argv : list of str, optional
        ``--frames`` (default 3M, or ``$BAMDP_DEMO_FRAMES``), ``--seed``, ``--run-dir`` and
        ``--json`` (write the result there); ``None`` reads ``sys.argv``.

    Returns
    -------
    dict
        ``seed``, ``frames``, ``train_seconds``, ``mean`` (per episode) and the rows printed.

    Examples
    --------
    ``make demo`` runs ``python -m torchrl_bamdp.demo`` (minutes of training, so not run here);
    a shorter run from Python:

    >>> main(["--frames", "200000", "--run-dir", "runs/demo-short"])  # doctest: +SKIP
    Training VariBAD on GridNavi for 200,000 frames (seed 0) -> runs/demo-short
    ...
    | policy | episode 1 | episode 2 | episode 3 | episode 4 |
    ...
    """
    parser = argparse.ArgumentParser(description=__doc__)
    default_frames = int(os.environ.get("BAMDP_DEMO_FRAMES", 3_000_000))
    parser.add_argument("--frames", type=int, default=default_frames)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--run-dir", type=Path, default=None)
    parser.add_argument("--json", type=Path, default=None, help="write the result here")
    args = parser.parse_args(argv)
    run_dir = args.run_dir or Path("runs") / f"demo-{time.strftime('%Y%m%d-%H%M%S')}"
    config = demo_config(args.frames, args.seed)
    print(
        f"Training VariBAD on GridNavi for {args.frames:,} frames (seed {args.seed}) -> {run_dir}"
    )
    start = time.perf_counter()
    trainer = Trainer(config, run_dir)
    result = trainer.train()
    wall = time.perf_counter() - start
    episodes = config.env.episodes_per_task
    optimal = BayesOptimalGridNavi(
        GridNaviSpec(episode_length=config.env.episode_length, episodes_per_task=episodes)
    )
    rows = {
        "VariBAD (ours; critic reads the true task, policy the decoded belief)": result["eval"][
            "mean"
        ],
        "random policy": trainer.evaluate(
            policy=uniform_random_policy(trainer.env.action_spec.n)
        ).mean,
        "Bayes-optimal (exact DP)": optimal.expected_returns(),
    }
    machine = machine_info()
    print(f"\nMeta-test return per inner episode on {config.train.eval_tasks} fixed test tasks")
    print(
        f"({result['frames']:,} frames, seed {args.seed}, {wall:.0f} s wall-clock, "
        f"{machine['cpu']}, torch {torch.__version__})\n"
    )
    header = "| policy | " + " | ".join(f"episode {k + 1}" for k in range(episodes)) + " |"
    print(header)
    print("|---" * (episodes + 1) + "|")
    for name, values in rows.items():
        print(f"| {name} | " + " | ".join(f"{v:.2f}" for v in values) + " |")
    print()
    print("\n".join(reference_lines()))
    print(
        "The same seed gives the same numbers on one machine; other CPUs round differently and "
        "land elsewhere within (or near) this spread."
    )
    print(f"\nRun directory: {run_dir} (config.json, metrics.csv, eval.jsonl, checkpoints/)")
    report = {
        "seed": args.seed,
        "frames": result["frames"],
        "train_seconds": trainer.train_seconds,
        "wall_seconds": wall,
        "mean": list(result["eval"]["mean"]),
        "rows": {name: list(map(float, values)) for name, values in rows.items()},
        "machine": machine,
    }
    if args.json is not None:
        write_result_json(args.json, report)
    return report


if __name__ == "__main__":
    main()
