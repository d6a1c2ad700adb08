# ---
# jupyter:
#   jupytext:
#     text_representation:
#       extension: .py
#       format_name: percent
# ---

# %% [markdown]
# # Tutorial 5: tracking experiments in Weights & Biases
#
# Every run of the toolkit writes a CSV of its metrics, its evaluations and its figures into its
# own run directory, whatever the logger. With `logger=wandb` the same numbers also go to a
# W&B run through TorchRL's `torchrl.record.loggers.WandbLogger`:
#
# - **offline by default**: nothing touches the network, the run is stored under
#   `<run_dir>/wandb/offline-run-*` and uploaded later with `wandb sync` (so a cluster node
#   without internet, or a laptop on a plane, logs exactly like a connected machine);
# - `logger.mode=online` logs live; if the server cannot be reached the run falls back to
#   offline with one warning and training goes on;
# - the W&B **config** is the resolved, validated run config; the **name** is
#   `<env>-<algo>-seed<seed>` and the **group** `<env>-<algo>` (override with `logger.group=`),
#   so seeds of one algorithm group together in the W&B UI;
# - metrics are grouped by prefix: `train/` (returns of the collected tasks per inner episode),
#   `ppo/`, `elbo/` (loss terms, gradient norms, learning rates), `eval/` (meta-test return per
#   inner episode), `perf/` (frames per second, wall-clock) and `health/` (skipped updates);
#   each group has its own `<group>/step` axis = frames collected;
# - the per-episode meta-test results are logged as a W&B **table** (`eval/per_episode`) at
#   every evaluation, and the run's **figures** (belief heatmaps along a test rollout, latent
#   trace, learning curve, per-episode returns) as W&B **images** (`figures/...`) at the end;
# - `resume=<run_dir>` continues the *same* W&B run (its id is kept in `wandb_id.txt`).
#
# This tutorial trains a small VariBAD run with W&B logging in Python, looks at what ended up in
# the offline W&B run, resumes it, and then shows a seed sweep with Hydra multirun.
#
# Run it as a script (`.venv/bin/python tutorials/05_wandb_logging.py`) or as a notebook
# (`.venv/bin/jupytext --to notebook tutorials/05_wandb_logging.py`). `BAMDP_TUTORIAL_FAST=1`
# shrinks the budgets, `BAMDP_TUTORIAL_OUT` sets the output folder.

# %%
import csv
import json
import os
import subprocess
import sys
from collections import Counter
from pathlib import Path

from torchrl_bamdp.configs import load_config
from torchrl_bamdp.trainers import Trainer

FAST = os.environ.get("BAMDP_TUTORIAL_FAST") == "1"
OUT = Path(os.environ.get("BAMDP_TUTORIAL_OUT", "tutorial_outputs/05_wandb_logging"))
OUT.mkdir(parents=True, exist_ok=True)
# Keep this tutorial's W&B files (settings, cache) inside its output folder, and quiet.
os.environ.setdefault("WANDB_DIR", str(OUT))
os.environ.setdefault("WANDB_CONFIG_DIR", str(OUT / "wandb_config"))
os.environ.setdefault("WANDB_CACHE_DIR", str(OUT / "wandb_cache"))
os.environ.setdefault("WANDB_SILENT", "true")
FRAMES = 7_680 if FAST else 768_000

# %% [markdown]
# ## 1. A run with `logger.backend=wandb`
#
# In Python the logger is part of the config like everything else (on the command line:
# `bamdp-train logger=wandb`). `mode: offline` is the default; `project` names the W&B project.

# %%
config = load_config(
    {
        "seed": 0,
        "env": {"num_envs": 32 if FAST else 64},
        "logger": {"backend": "wandb", "mode": "offline", "project": "bamdp-tutorial"},
        "train": {
            "total_frames": FRAMES,
            "eval_interval": 2 if FAST else 25,
            "eval_tasks": 21 if FAST else 210,
            "progress_bar": False,
        },
    }
)
run_dir = OUT / "run"
result = Trainer(config, run_dir).train()
# (A short budget: VariBAD needs a few million frames to approach the Bayes-optimal returns,
# see the README's results; here we only need something to log.)
print(f"trained {result['frames']} frames; meta-test return per episode:")
print("  " + ", ".join(f"{m:.2f}" for m in result["eval"]["mean"]))

# %% [markdown]
# ## 2. What was logged
#
# The run directory holds the CSV (`metrics.csv`, long format: iteration, frames, metric,
# value), the evaluations (`eval.jsonl`), the figures (`figures/*.png|pdf`) and the offline W&B
# run. The metric names are the same in both, grouped by prefix:

# %%
with (run_dir / "metrics.csv").open() as f:
    names = {row["metric"] for row in csv.DictReader(f)}
groups = Counter(name.split("/")[0] for name in names)
for group, count in sorted(groups.items()):
    examples = sorted(n for n in names if n.startswith(group + "/"))[:4]
    print(f"{group + '/':9} {count:3d} metrics, e.g. {', '.join(examples)}")

(offline_run,) = sorted((run_dir / "wandb").glob("offline-run-*"))
run_id = (run_dir / "wandb_id.txt").read_text().strip()
print(f"\nW&B offline run: {offline_run} (id {run_id})")
media = offline_run / "files" / "media"
images = sorted(p.name for p in (media / "images").rglob("*.png"))
tables = sorted((media / "table").rglob("*.table.json"))
print(f"figures logged as W&B images: {images}")
last_table = json.loads(tables[-1].read_text())
print(f"{len(tables)} per-episode tables, the last one: {last_table['columns']}")
for row in last_table["data"]:
    print("  ", row)
print("figure files in the run directory:", sorted(p.name for p in (run_dir / "figures").iterdir()))

# %% [markdown]
# ## 3. Uploading an offline run
#
# On a machine with network access and a W&B account (`wandb login`), upload the offline run
# with `wandb sync`; it keeps its id, name, group and config, so it appears in the W&B UI as if
# it had been logged online:
#
# ```bash
# .venv/bin/wandb sync runs/<run>/wandb/offline-run-*
# ```
#
# To log live instead, pass `logger.mode=online` (with `WANDB_API_KEY` set or after
# `wandb login`). If the W&B server does not answer within 5 s the run warns once, logs offline
# in the same place and keeps training; the warning prints the `wandb sync` command to run later.

# %%
print(f"to upload: wandb sync {offline_run}")

# %% [markdown]
# ## 4. Resuming continues the same W&B run
#
# A stopped or killed run continues from its last checkpoint with the same run directory
# (`bamdp-train resume=<run_dir> train.total_frames=...` on the command line). The W&B id in
# `wandb_id.txt` is reused, so the curves continue in the same W&B run instead of starting a
# new one.

# %%
saved = json.loads((run_dir / "config.json").read_text())  # the resolved config of the run
saved["train"]["total_frames"] = FRAMES + 2 * 64 * 60  # two more iterations
resumed = Trainer(load_config(saved), run_dir)
print(f"resumed at {resumed.frames} frames")
resumed.train()
runs = sorted((run_dir / "wandb").glob("offline-run-*"))
same_id = all(p.name.endswith(run_id) for p in runs)
print(f"offline W&B run folders: {len(runs)} (one per session), all with id {run_id}: {same_id}")

# %% [markdown]
# ## 5. Sweeps with Hydra multirun
#
# `bamdp-train -m` runs every combination of the comma-separated overrides, one run directory
# each (`runs/<env>-<algo>-seed<seed>-<time>`, or `run_dir=` with `${...}` interpolation). With
# `logger=wandb` each becomes its own W&B run, named `<env>-<algo>-seed<seed>` and grouped by
# env and algorithm, which is what the W&B UI needs to average seeds:
#
# ```bash
# .venv/bin/bamdp-train -m seed=0,1,2,3,4 algo=varibad,rl2 logger=wandb
# .venv/bin/bamdp-eval run_dir=runs            # mean +- s.e. over seeds, per algorithm
# .venv/bin/bamdp-plot run_dir=runs out=figs   # Fig 3a/3b/4 from those runs
# ```
#
# Hydra's basic launcher runs the combinations one after the other; to use several cores,
# `benchmarks/gridworld_baselines.py --jobs N` runs the same commands N at a time. Here is a
# tiny sweep over two seeds, run the way a user runs it:

# %%
sweep_dir = OUT / "sweep"
sweep_dir.mkdir(exist_ok=True)
bamdp_train = Path(sys.executable).parent / "bamdp-train"
command = [
    str(bamdp_train),
    "-m",
    "seed=0,1",
    "logger=wandb",
    "logger.project=bamdp-tutorial",
    "env.num_envs=16",
    "algo.ppo.minibatches=4",
    "train.total_frames=1920",  # two iterations: this shows the mechanics
    "train.eval_tasks=21",
    "train.progress_bar=false",
    "train.figures=false",
]
subprocess.run(command, cwd=sweep_dir, check=True, capture_output=True, text=True)
for run in sorted((sweep_dir / "runs").iterdir()):
    (w,) = (run / "wandb").glob("offline-run-*")
    print(run.name, "->", w.name)

# %%
print("done: tutorial 5")
