# ---
# jupyter:
#   jupytext:
#     text_representation:
#       extension: .py
#       format_name: percent
# ---

# %% [markdown]
# # Tutorial 4: swapping the algorithm is swapping the transform
#
# In `torchrl_bamdp` an algorithm for BAMDPs is a pair: a *transform* that writes some belief
# into the tensordict and concatenates it with the observation into `"hyper_state"`, and a
# PPO actor-critic on `hyper_state` (tutorial 1, section 5). The policy never knows which
# belief produced its input. So the classic baselines of the VariBAD paper are one-line
# changes of the same agent:
#
# | `algo.name` | hyper-state transform | what the policy sees |
# |---|---|---|
# | `varibad` | `varibad_transforms(encoder)` | learned posterior (mean, log-var), ELBO-trained |
# | `belief_oracle` | `exact_belief_transforms()` | the exact posterior over goal cells |
# | `rl2` | `rl2_transforms(gru)` | a GRU memory trained end to end by PPO |
# | `oracle` | `oracle_transforms()` | the true task (the upper reference) |
#
# Part 1 trains each of them with the library's `Trainer` on the same short budget and plots
# the per-episode meta-test returns against the Bayes-optimal value. Part 2 writes a *new*
# belief transform in a few lines, registers it as an algorithm of its own (`visit_map`, through
# the same `register_algorithm` call the shipped algorithms use) and trains it with the same
# `Trainer`.
#
# Run: `.venv/bin/python tutorials/04_swap_the_belief.py` (under 2 minutes on one CPU core;
# `BAMDP_TUTORIAL_FAST=1` trains for one batch per algorithm, `BAMDP_TUTORIAL_OUT` sets the
# output folder, default `tutorial_outputs/04_swap_the_belief`).

# %%
import logging
import os
import shutil
import time
from pathlib import Path

import torch
from tensordict import TensorDictBase
from torch.nn import functional as F
from torchrl.data import Bounded, Composite
from torchrl.envs import Compose, TransformedEnv
from torchrl.envs.transforms import Transform

from torchrl_bamdp.algorithms import algorithm_names, register_algorithm
from torchrl_bamdp.configs import load_config
from torchrl_bamdp.envs import make_env
from torchrl_bamdp.envs.gridworld import GRID_MOVES
from torchrl_bamdp.evaluation.plots import plot_per_episode_returns
from torchrl_bamdp.modules.actor_critic import make_actor_critic
from torchrl_bamdp.policies import BayesOptimalGridNavi
from torchrl_bamdp.trainers import Agent, Trainer, build_agent
from torchrl_bamdp.trainers.runs import open_run
from torchrl_bamdp.transforms import hyper_state_transform

FAST = os.environ.get("BAMDP_TUTORIAL_FAST", "0") not in ("", "0")
OUT = Path(os.environ.get("BAMDP_TUTORIAL_OUT", Path("tutorial_outputs") / "04_swap_the_belief"))
OUT.mkdir(parents=True, exist_ok=True)
SEED = 0
torch.manual_seed(SEED)
torch.set_num_threads(1)
logging.getLogger("torchrl").setLevel(logging.WARNING)

NUM_ENVS = 16 if FAST else 64
BATCHES = 1 if FAST else 25  # per algorithm: 25 x 64 envs x 60 steps = 96k frames
FRAMES = BATCHES * NUM_ENVS * 60
EVAL_TASKS = 21 if FAST else 210  # stratified: each of the 21 goals equally often
print(f"fast mode: {FAST}; {FRAMES} training frames per algorithm; outputs in {OUT}")


def show(paths):
    """Print where a figure was written; display it inline when running as a notebook."""
    png = next(Path(p) for p in paths if str(p).endswith(".png"))
    print(f"figure written: {png}")
    try:
        from IPython import get_ipython
        from IPython.display import Image, display
    except ImportError:
        return
    if get_ipython() is not None:
        display(Image(filename=str(png)))


# %% [markdown]
# ## 1. One config key, four agents
#
# `build_agent(config, env)` returns an `Agent`: its `make_transforms()` (the hyper-state
# transform), its `actor` and `critic`, and what else trains (VariBAD's `elbo_loss`; RL2's
# `reencode`, which recomputes the GRU memory with gradients so PPO can train it, which is
# why RL2 requires `algo.ppo.encoder_grad=True`). Everything else (env, PPO settings, network
# sizes) is the same config.

# %%
ALGOS = {
    "varibad": {"name": "varibad"},
    "belief_oracle": {"name": "belief_oracle"},
    "rl2": {"name": "rl2", "ppo": {"encoder_grad": True}},
    "oracle": {"name": "oracle"},
}


def make_config(algo, frames=FRAMES):
    return load_config(
        {
            "seed": SEED,
            "algo": algo,
            "env": {"num_envs": NUM_ENVS},
            "train": {
                "total_frames": frames,
                "eval_interval": 0,  # evaluate at the end only
                "eval_tasks": EVAL_TASKS,
                "checkpoint_interval": 0,
                "progress_bar": False,
                "figures": False,
            },
        }
    )


probe_env = make_env("gridworld", num_envs=2, seed=SEED)
for name, algo in ALGOS.items():
    agent = build_agent(make_config(algo), probe_env)
    transforms = agent.make_transforms()
    steps = list(transforms) if isinstance(transforms, Compose) else [transforms]
    size = agent.transformed_env(probe_env).observation_spec["hyper_state"].shape[-1]
    trained = ["actor", "critic"] + (["ELBO"] if agent.elbo_loss else [])
    trained += ["encoder by PPO"] if agent.reencode is not None else []
    print(
        f"{name:14} hyper_state {size:3d} | transforms: "
        f"{' -> '.join(type(t).__name__ for t in steps):28} | trains: {', '.join(trained)}"
    )

# %% [markdown]
# ## 2. Train each on the same budget
#
# Each run gets its own directory (config, metrics CSV, evaluation log, checkpoint), trains for
# the same number of frames with the same seed, and is meta-tested on the same stratified test
# tasks with greedy actions. The untrained reference agents (`random`, `bayes_optimal`) go
# through the very same `Trainer`: it only evaluates them.

# %%
results, seconds = {}, {}
REFERENCES = {"random": {"name": "random"}, "bayes_optimal": {"name": "bayes_optimal"}}
for name, algo in {**ALGOS, **REFERENCES}.items():
    run_dir = OUT / "runs" / name
    shutil.rmtree(run_dir, ignore_errors=True)  # a fresh run, not a resume of an older one
    start = time.perf_counter()
    final = Trainer(make_config(algo), run_dir).train()
    seconds[name] = time.perf_counter() - start
    results[name] = final["eval"]
    means = " ".join(f"{m:6.2f}" for m in final["eval"]["mean"])
    print(f"{name:14} {final['frames']:7d} frames {seconds[name]:5.1f} s | per episode: {means}")
optimal = BayesOptimalGridNavi().expected_returns()
print("exact DP values:", " ".join(f"{m:.3f}" for m in optimal))

# %% [markdown]
# ## 3. A belief of your own
#
# Any `Transform` that writes its own key and is followed by `hyper_state_transform` makes a
# new agent. Here is a hand-made "belief" that is not a probability distribution at all: a
# **visit map**, one number per cell, 0 while the agent has not been there, -1 once it landed
# there without reward, +1 where it found the goal. On GridNavi this is a sufficient statistic
# of the exact posterior (the support is the unvisited candidate cells, or the +1 cell), so a
# policy on it can be as good as the belief oracle's.
#
# What makes it a BAMDP belief is *when* it resets: `_reset` is called by TorchRL only when
# the BAMDP restarts (a new task), so the map survives the inner episodes. And as in
# `ExactGridBelief`, the landing cell is computed from the current position and action, since
# after an inner episode the next observation is already the start state.

# %%
VISITS = ("belief", "visits")


class VisitMap(Transform):
    """Per-cell visit map of the current task: 0 unvisited, -1 visited and empty, +1 goal."""

    def __init__(self, grid_size: int = 5) -> None:
        super().__init__(in_keys=["observation", "action", "reward"], out_keys=[VISITS])
        self.grid_size = grid_size
        self.register_buffer("moves", torch.tensor(GRID_MOVES))

    def _reset(self, tensordict: TensorDictBase, tensordict_reset: TensorDictBase):
        shape = (*tensordict_reset.batch_size, self.grid_size**2)
        return tensordict_reset.set(VISITS, torch.zeros(shape, device=tensordict_reset.device))

    def _step(self, tensordict: TensorDictBase, next_tensordict: TensorDictBase):
        n = self.grid_size
        landed = (tensordict["observation"].long() + self.moves[tensordict["action"]]).clamp(
            0, n - 1
        )
        here = F.one_hot(landed[..., 0] * n + landed[..., 1], n * n).bool()
        mark = torch.where(next_tensordict["reward"] > 0, 1.0, -1.0)  # [B, 1], broadcast
        return next_tensordict.set(VISITS, torch.where(here, mark, tensordict[VISITS]))

    def _call(self, next_tensordict: TensorDictBase) -> TensorDictBase:
        return next_tensordict  # everything happens in _reset and _step

    def transform_observation_spec(self, observation_spec: Composite) -> Composite:
        shape = (*self.parent.batch_size, self.grid_size**2)
        observation_spec[VISITS] = Bounded(-1.0, 1.0, shape=shape, device=observation_spec.device)
        return observation_spec


def visit_map_transforms():
    return Compose(VisitMap(), hyper_state_transform(belief_keys=[VISITS]))


env = TransformedEnv(make_env("gridworld", num_envs=NUM_ENVS, seed=SEED), visit_map_transforms())
td = env.rollout(20, break_when_any_done=False)  # random actions
print("hyper_state size:", td["hyper_state"].shape[-1], "= 2 (position) + 25 (visit map)")
print("visit map of env 0 after 20 random steps (rows y = 4..0, columns x = 0..4):")
print(td["next", *VISITS][0, -1].reshape(5, 5).T.flip(0).long())

# %% [markdown]
# ## 4. Your belief as an algorithm of its own
#
# An algorithm is a *builder*, a function `(config, env) -> Agent`: it sizes its networks from
# the env's specs and returns an `Agent`, the transform that makes the hyper-state
# (`make_transforms`, called once per env: training and every evaluation) plus the policy and
# value networks that read it (`make_actor_critic` on the new hyper-state size). The shipped
# algorithms are builders too (`torchrl_bamdp.trainers.agents.build_varibad`, ...), registered
# by name in `torchrl_bamdp.algorithms`; `register_algorithm` registers ours the same way. From
# then on `visit_map` is an `algo.name` like any other: `load_config` accepts it, and the very
# same `Trainer` builds, trains, checkpoints and evaluates it (no `agent=` argument, no loop of
# our own). There is no ELBO since nothing is learnt in this belief; the config supplies the PPO
# settings and the budget, the same as the runs above.
#
# From the command line, where nothing of this script runs, the builder is named by import
# path instead: `bamdp-train algo.builder=my_pkg.agents:visit_map_agent algo.name=visit_map`.
# The run's `config.json` keeps the path, so a resume, `bamdp-eval` and `bamdp-plot` rebuild the
# agent in another process. A builder may also give its agent `aux_losses={"name": LossModule}`,
# trained beside the ELBO and logged as `<name>/<term>` (README, "Bring your own algorithm").


# %%
def visit_map_agent(config, base_env):
    """The builder: PPO on [position, visit map]."""
    obs_dim = base_env.observation_spec["observation"].shape[-1]
    ppo = config.algo.ppo
    actor, critic = make_actor_critic(
        obs_dim + 25, base_env.action_spec, hidden=ppo.hidden, activation=ppo.activation
    )
    return Agent(config.algo.name, actor, critic, visit_map_transforms)


# replace=True: re-running this cell (in a notebook) registers the new definition again.
register_algorithm("visit_map", visit_map_agent, "PPO on a per-cell visit map", replace=True)
print("registered algorithms:", ", ".join(algorithm_names()))

run_dir = OUT / "runs" / "visit_map"
shutil.rmtree(run_dir, ignore_errors=True)
start = time.perf_counter()
final = Trainer(make_config({"name": "visit_map"}), run_dir).train()
seconds["visit_map"] = time.perf_counter() - start
results["visit_map"] = final["eval"]
means = " ".join(f"{m:6.2f}" for m in final["eval"]["mean"])
print(
    f"{'visit_map':14} {final['frames']:7d} frames {seconds['visit_map']:5.1f} s "
    f"| per episode: {means}"
)

# %% [markdown]
# The run directory is a run like the others: reopened read-only (what `bamdp-eval` does), its
# agent is rebuilt by name from its `config.json` and its checkpoint restored, and the same
# test tasks give the same returns.

# %%
reopened = open_run(run_dir)
again = reopened.evaluate().mean
print(
    f"reopened {reopened.config.algo.name!r} run at {reopened.frames} frames, "
    f"same meta-test: {again == results['visit_map']['mean']}"
)

# %% [markdown]
# ## 5. The comparison

# %%
labels = {
    "varibad": "VariBAD",
    "belief_oracle": "belief oracle (exact posterior)",
    "rl2": "RL2",
    "visit_map": "visit map (this tutorial)",
    "random": "random",
}
print(f"meta-test return per inner episode, {EVAL_TASKS} test tasks, {FRAMES} frames each")
print(f"{'agent':33}" + "".join(f"  episode {k + 1}" for k in range(4)) + "      total")
for name, label in {**labels, "oracle": "oracle (knows the goal)"}.items():
    mean = results[name]["mean"]
    print(f"{label:33}" + "".join(f"{m:11.3f}" for m in mean) + f"{sum(mean):11.3f}")
print(f"{'Bayes-optimal (exact DP)':33}" + "".join(f"{m:11.3f}" for m in optimal))
show(
    plot_per_episode_returns(
        {label: (results[k]["mean"], results[k]["stderr"]) for k, label in labels.items()},
        OUT / "per_episode_returns",
        references={"Bayes-optimal (DP)": optimal, "oracle": results["oracle"]["mean"]},
        title=f"GridNavi, {FRAMES / 1e6:.2f}M frames per agent",
    )
)

# %% [markdown]
# How to read it: the oracle knows the goal, so it needs no episode to explore and scores the
# same in every episode once trained, a bound no belief can reach in episode 1; the
# Bayes-optimal line is the best any agent that does *not* know the goal can do. The agents
# whose belief is *given* (the exact posterior, or the visit map that encodes the same
# information) only have to learn a policy; VariBAD must first learn its belief through the
# ELBO, and its policy chases a moving input until the belief settles (the README's benchmark
# trains it for 10M frames); RL2 learns its memory from the RL signal alone. This budget (about
# 0.1M frames per agent) is far too short to rank the algorithms: short runs favour whatever is
# cheapest to learn, and single seeds are noisy.
#
# **Takeaway.** Swapping the algorithm is swapping the transform: `algo.name` in the config,
# or any `Transform` of your own followed by `hyper_state_transform(belief_keys=[...])`, made an
# algorithm by a builder (`register_algorithm`, or `algo.builder` by import path). The env, the
# collector, the actor-critic, PPO, checkpoints and the evaluation stay the same.

# %%
print("done: tutorial 4")
