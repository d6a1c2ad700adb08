# ---
# jupyter:
#   jupytext:
#     text_representation:
#       extension: .py
#       format_name: percent
# ---

# %% [markdown]
# # Tutorial 6: tasks that change with no boundaries
#
# VariBAD assumes one task per BAMDP: the belief starts at the prior when a task starts and
# only narrows after. Here the task *switches* at random times within one long rollout, with
# no signal and no inner episodes: after every step the goal is redrawn from the prior with
# probability h (the hazard). Three things follow, one section each:
#
# 1. the env: `env.switching_hazard` in the config, or `make_env(..., switching_hazard=h)`;
# 2. the exact posterior is now a hidden-Markov-model filter, which mixes its belief back
#    toward the prior at rate h every step (`SwitchingGridBelief`, checked against brute-force
#    Bayes in `tests/transforms/test_switching_belief.py`);
# 3. a VariBAD that works there, `algo=varibad_switching`: its belief is never reset inside
#    the rollout and its ELBO is the switching prior's (decode the rewards ahead, weighted by
#    the probability that the task has not switched since, and a KL to the mixture prior; the
#    maths is in `torchrl_bamdp/objectives/switching_elbo.py`), trained next to VariBAD trained
#    with known task boundaries and the belief oracle on the exact switching posterior.
#
# Run: `.venv/bin/python tutorials/06_task_switching.py` (a few minutes on one CPU core;
# `BAMDP_TUTORIAL_FAST=1` trains for a few batches, `BAMDP_TUTORIAL_OUT` sets the output folder,
# default `tutorial_outputs/06_task_switching`).

# %%
import logging
import os
import shutil
from pathlib import Path

import matplotlib
import torch
from torchrl.envs import TransformedEnv
from torchrl.envs.utils import check_env_specs

from torchrl_bamdp.cli import compose_config
from torchrl_bamdp.envs import TASK_SWITCHED, make_env, make_env_from_config
from torchrl_bamdp.trainers import Trainer
from torchrl_bamdp.trainers.runs import evaluate_run_switching
from torchrl_bamdp.transforms import BELIEF_PROBS, SwitchingGridBelief

matplotlib.use(os.environ.get("MPLBACKEND", "Agg"))
from matplotlib import pyplot as plt  # noqa: E402

FAST = os.environ.get("BAMDP_TUTORIAL_FAST", "0") not in ("", "0")
OUT = Path(os.environ.get("BAMDP_TUTORIAL_OUT", Path("tutorial_outputs") / "06_task_switching"))
OUT.mkdir(parents=True, exist_ok=True)
SEED = 0
torch.manual_seed(SEED)
torch.set_num_threads(1)
logging.getLogger("torchrl").setLevel(logging.WARNING)

HAZARD = 0.05
HORIZON = 60 if FAST else 200
NUM_ENVS = 8 if FAST else 64
FRAMES = (2 if FAST else 20) * NUM_ENVS * HORIZON  # per agent: 20 batches = 256k frames
EVAL_TASKS = 21 if FAST else 210
print(f"fast mode: {FAST}; {FRAMES} training frames per agent; outputs in {OUT}")

# %% [markdown]
# ## 1. The switching env
#
# `env.switching_hazard=h` (0, the default, is off) turns a task family's BAMDP into one
# rollout of `env.episode_length` steps (`env.episodes_per_task` must be 1) whose task is
# redrawn after every step with probability h, without moving the agent. TorchRL's `done`
# fires at the end of the rollout only, so a collector never resets the belief in between.
# The env writes the task in force and whether it was redrawn (`task`, `task_switched`) for
# oracles and evaluation; no hyper-state transform of the package reads them. Families whose
# registration declares `switchable=True` (GridNavi, the point robots) accept a hazard; the
# MuJoCo families are refused with a message naming the field.

# %%
switching_cli = [
    f"env.switching_hazard={HAZARD}",
    f"env.episode_length={HORIZON}",
    "env.episodes_per_task=1",
    f"env.num_envs={NUM_ENVS}",
]
config = compose_config(["algo=varibad_switching", *switching_cli])  # as bamdp-train does
env = make_env_from_config(config.env, seed=SEED)
print(f"{type(env).__name__}: hazard {env.hazard}, horizon {env.horizon}, batch {env.batch_size}")
check_env_specs(env)
print("check_env_specs: passed")
# The same env from Python directly:
same = make_env("gridworld", num_envs=NUM_ENVS, episode_length=HORIZON, episodes_per_task=1,
                switching_hazard=HAZARD, seed=SEED)  # fmt: skip
print(f"make_env gives the same env: {(same.hazard, same.horizon) == (env.hazard, env.horizon)}")
rollout = env.rollout(HORIZON, break_when_any_done=False)
switches = rollout["next", TASK_SWITCHED][..., 0].sum(1).float()
print(f"switches per rollout: {switches.mean():.1f} (expected {HAZARD * (HORIZON - 1):.1f})")
print(f"TorchRL done fired {int(rollout['next', 'done'].sum())} times ({NUM_ENVS} rollouts)")

# %% [markdown]
# ## 2. The exact posterior under the switching prior
#
# For GridNavi the posterior stays exact: keep the goals consistent with the last reward
# (Bayes), then mix with the prior (the switch drawn after the step):
# `b_{t+1} = (1 - h) * f_{t+1} + h * prior`. `SwitchingGridBelief` writes `b` under
# `("belief", "probs")`, the key of the fixed-task posterior, so the belief oracle's policy
# reads either. Below: a policy that walks to the most likely cell under that belief, and the
# belief's mass on the goal in force along one rollout, with the switches marked.

# %%
belief_env = TransformedEnv(env, SwitchingGridBelief.from_env(env))
cells = torch.stack(torch.meshgrid(torch.arange(5), torch.arange(5), indexing="ij"), -1)
cells = cells.reshape(-1, 2)


def walk_to_the_most_likely_cell(td):
    position, probs = td["observation"].long(), td[BELIEF_PROBS]
    distance = (cells.unsqueeze(0) - position.unsqueeze(1)).abs().sum(-1)
    target = cells[(probs - 1e-6 * distance).argmax(-1)]  # ties: the nearest
    step = (target - position).sign()
    action = torch.where(step[:, 0] > 0, 2, torch.where(step[:, 0] < 0, 4, 0))
    action = torch.where((step[:, 0] == 0) & (step[:, 1] > 0), 1, action)
    td["action"] = torch.where((step[:, 0] == 0) & (step[:, 1] < 0), 3, action)
    return td


belief_env.set_seed(SEED)
with torch.no_grad():
    filtered = belief_env.rollout(HORIZON, walk_to_the_most_likely_cell, break_when_any_done=False)
goal = filtered["task"][0].long()
mass = filtered[BELIEF_PROBS][0].gather(-1, (goal[:, 0] * 5 + goal[:, 1]).unsqueeze(-1))[:, 0]
fig, ax = plt.subplots(figsize=(8, 2.6))
ax.plot(mass.numpy(), label="exact posterior of the goal in force")
for t in filtered["next", TASK_SWITCHED][0, :, 0].nonzero().flatten().tolist():
    ax.axvline(t + 1, color="grey", lw=0.8, ls=":")
ax.set(xlabel="step", ylabel="probability", ylim=(0, 1.05), title="switches (dotted)")
ax.legend(loc="lower right")
fig.tight_layout()
fig.savefig(OUT / "switching_posterior.png", dpi=100)
plt.close(fig)
per_100 = filtered["next", "reward"].sum(1).mean() * 100 / HORIZON
print(f"exact filter + greedy walk: return per 100 steps {per_100:.2f}")
print(f"figure written: {OUT / 'switching_posterior.png'}")

# %% [markdown]
# ## 3. Three agents on the switching env
#
# * `varibad_switching`, trained on the switching env (`bamdp-train algo=varibad_switching
#   env.switching_hazard=0.05 env.episode_length=200 env.episodes_per_task=1`);
# * `varibad` trained with known boundaries on the normal GridNavi BAMDP, then meta-tested on
#   the switching env (`bamdp-eval run_dir=<its run> switching_hazard=0.05 horizon=200`):
#   its belief is reset only when a rollout starts, and it never learnt to drop a goal that
#   stopped paying;
# * `belief_oracle` on the exact switching posterior (the same algorithm name: on a switching
#   env its belief is the HMM filter).
#
# The same PPO settings for all three, and nothing privileged in training (no critic reading
# the task, no time features: the time of a 4 x 15-step BAMDP means nothing here). The score is
# the return per 100 steps on the same seeded test rollouts. At this budget none has finished
# learning; `benchmarks/switching_campaign.py` runs the comparison at 2M frames and 3 seeds
# (README, "Task changes with no boundaries").

# %%
shared = ["algo.ppo.critic_task=false", "algo.ppo.time_features=false", f"seed={SEED}"]
train = [
    f"train.total_frames={FRAMES}",
    f"train.eval_tasks={EVAL_TASKS}",
    "train.eval_interval=0",
    "train.progress_bar=false",
    "train.figures=false",
]
runs = OUT / "runs"
shutil.rmtree(runs, ignore_errors=True)
agents = {
    "varibad_switching": ["algo=varibad_switching", *switching_cli],
    "varibad": ["algo=varibad", f"env.num_envs={NUM_ENVS}"],  # known boundaries: 4 x 15 steps
    "belief_oracle": ["algo=belief_oracle", *switching_cli],
}
results = {}
for name, overrides in agents.items():
    config = compose_config([*overrides, *shared, *train])
    Trainer(config, runs / name).train()
    report = evaluate_run_switching(runs / name, HAZARD, HORIZON, tasks=EVAL_TASKS)
    results[name] = report["return_per_100"]
    print(f"{name:18} return per 100 steps on the switching env: {report['return_per_100']:.2f}")

# %% [markdown]
# `bamdp-eval` runs the same meta-test: on a run trained on a switching env it needs no
# arguments; a fixed-task run needs the switching env to test it on.

# %%
print(f"bamdp-eval run_dir={runs / 'varibad_switching'}")
print(f"bamdp-eval run_dir={runs / 'varibad'} switching_hazard={HAZARD} horizon={HORIZON}")
print("done: tutorial 6")
