# ---
# jupyter:
#   jupytext:
#     text_representation:
#       extension: .py
#       format_name: percent
# ---

# %% [markdown]
# # Tutorial 1: a Bayes-adaptive MDP, in code
#
# A Bayes-adaptive MDP (BAMDP) is what an agent faces when it does not know *which* MDP it is
# in, only a distribution over MDPs ("tasks"), and it is scored on its return while it finds
# out. The Bayes-optimal agent conditions on its *belief* over tasks, so its state is the
# *hyper-state* (observation, belief), and it trades off exploration (to sharpen the belief)
# against exploitation automatically: there is no exploration bonus, only the expected return
# under the belief.
#
# This tutorial builds every piece of that definition with `torchrl_bamdp` on GridNavi, the
# gridworld of the VariBAD paper, without training anything:
#
# 1. the **task distribution** (21 possible goal cells, sampled with a seeded generator);
# 2. the **multi-episode horizon** (`BAMDPEnv`: several inner episodes in the *same* task);
# 3. the **exact belief** over goals (`ExactGridBelief`) and how cells get ruled out;
# 4. the **Bayes-optimal value** by dynamic programming, checked against a rollout of the
#    `BayesOptimalPolicy`, and compared with a random policy;
# 5. the **hyper-state contract** every algorithm of the toolkit keeps.
#
# Run it as a script (`.venv/bin/python tutorials/01_bamdp_basics.py`) or open it as a notebook
# (`.venv/bin/jupytext --to notebook tutorials/01_bamdp_basics.py`). Two environment variables:
# `BAMDP_TUTORIAL_FAST=1` shrinks every budget (used by the tests), `BAMDP_TUTORIAL_OUT` sets the
# output folder (default `tutorial_outputs/01_bamdp_basics`).

# %%
import os
from pathlib import Path

import torch
from matplotlib.figure import Figure
from torchrl.envs import TransformedEnv

from torchrl_bamdp.envs import BAMDPEnv, GridNaviEnv, candidate_goal_cells, make_env
from torchrl_bamdp.evaluation.meta_test import meta_test, per_episode_returns
from torchrl_bamdp.evaluation.plots import plot_belief_rollout
from torchrl_bamdp.modules import BeliefEncoder
from torchrl_bamdp.modules.actor_critic import make_actor_critic
from torchrl_bamdp.policies import (
    BayesOptimalGridNavi,
    BayesOptimalPolicy,
    GridNaviSpec,
    uniform_random_policy,
)
from torchrl_bamdp.transforms import (
    BELIEF_PROBS,
    ExactGridBelief,
    exact_belief_transforms,
    hyper_state_transform,
    oracle_transforms,
    rl2_transforms,
    varibad_transforms,
)

FAST = os.environ.get("BAMDP_TUTORIAL_FAST", "0") not in ("", "0")
OUT = Path(os.environ.get("BAMDP_TUTORIAL_OUT", Path("tutorial_outputs") / "01_bamdp_basics"))
OUT.mkdir(parents=True, exist_ok=True)
SEED = 0
torch.manual_seed(SEED)
torch.set_num_threads(1)  # small batched envs: one thread is the fastest (DESIGN.md §6)
print(f"fast mode: {FAST}; figures go to {OUT}")


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
# ## 1. The task distribution
#
# In GridNavi the agent walks on a 5x5 grid from the corner (0, 0); the *task* is the goal
# cell, drawn uniformly from the 21 cells that are not among the four nearest the start. Every
# step gives -0.1, except a step that lands on the goal: +1. The agent observes its position,
# never the goal.
#
# A `TaskEnv` (here `GridNaviEnv`) holds one task per batch element and knows how to sample
# tasks; sampling takes a `torch.Generator`, so a seed gives the same tasks on any device. That
# is what makes test tasks reproducible across algorithms and runs.

# %%
goals = candidate_goal_cells(5)
print(f"{len(goals)} candidate goals:", [tuple(g) for g in goals.tolist()])

grid = GridNaviEnv(num_envs=4)
tasks = grid.sample_tasks(8, torch.Generator().manual_seed(SEED))
again = grid.sample_tasks(8, torch.Generator().manual_seed(SEED))
print("8 tasks drawn with seed 0:", [tuple(t) for t in tasks.long().tolist()])
print("same seed, same tasks:", bool((tasks == again).all()))

num_samples = 2_100 if FAST else 21_000
many = grid.sample_tasks(num_samples, torch.Generator().manual_seed(SEED)).long()
counts = torch.zeros(5, 5)
counts.index_put_((many[:, 0], many[:, 1]), torch.ones(num_samples), accumulate=True)
frequency = counts / num_samples
print(
    f"empirical goal frequency over {num_samples} draws: min {frequency[frequency > 0].min():.4f}"
    f", max {frequency.max():.4f} (uniform: 1/21 = {1 / 21:.4f})"
)

# %%
fig = Figure(figsize=(4.2, 3.6), layout="constrained")
ax = fig.subplots()
# Imshow is indexed [row, column]: draw x horizontally and y vertically (y up).
image = ax.imshow(frequency.T, origin="lower", cmap="viridis", vmin=0)
ax.plot(0, 0, marker="o", color="tab:red", ms=10)
ax.text(
    0.5,
    0.5,
    "start (0, 0)\nand its 3 nearest\ncells: no goal",
    ha="center",
    va="center",
    color="w",
    fontsize=7,
)
for x, y in goals.tolist():
    ax.text(x, y, f"{x},{y}", ha="center", va="center", color="w", fontsize=7)
ax.set_xlabel("x")
ax.set_ylabel("y")
ax.set_title("GridNavi: the 21 goal cells (empirical frequency)", fontsize=9)
fig.colorbar(image, ax=ax, label="frequency")
goal_figure = [OUT / "goals.png"]
fig.savefig(goal_figure[0], dpi=120)
show(goal_figure)

# %% [markdown]
# ## 2. The multi-episode horizon: `BAMDPEnv`
#
# Meta-RL evaluates an agent over several *inner episodes* of the same task: it should explore
# in the first and exploit in the next. `BAMDPEnv` implements that horizon once for every task
# family: an inner episode that ends (15 steps here) puts the agent back at the start state
# *in the same task*, flags `episode_done` and advances `episode`. TorchRL's own `done` fires
# only at the end of the whole BAMDP (4 x 15 = 60 steps), so anything that resets on `done`
# (a collector, a belief transform) resets exactly when a *new task* starts, never in between.
#
# Below, a scripted policy always moves right: it reaches (4, 0) and stays there (a move off the
# grid stays put). Look at the step where the first inner episode ends.


# %%
def constant_policy(action: int):
    """A TensorDict policy that always takes ``action``."""

    def policy(td):
        td.set("action", torch.full(td.batch_size, action, dtype=torch.long))
        return td

    return policy


env = BAMDPEnv(GridNaviEnv(num_envs=1), episode_length=15, episodes_per_task=4, seed=SEED)
rollout = env.rollout(env.horizon, constant_policy(2), break_when_any_done=False)[0]


def cell(position):
    return tuple(position.long().tolist())


print(f"horizon H+ = {env.horizon} steps; the task of this BAMDP: goal {cell(rollout['task'][0])}")

print("  t | episode step_in_ep | obs    -> next obs | reward | episode_done  done truncated")
for t in [0, 1, 2, 3, 13, 14, 15, 16, 58, 59]:
    row, nxt = rollout[t], rollout[t]["next"]
    print(
        f"{t:3d} | {int(row['episode']):7d} {int(row['step_in_episode']):11d} | "
        f"{cell(row['observation'])} -> {cell(nxt['observation'])}"
        f" | {float(nxt['reward']):+.1f}   | {bool(nxt['episode_done'])!s:12} "
        f"{bool(nxt['done'])!s:5} {bool(nxt['truncated'])!s}"
    )
print(
    f"episode_done fired {int(rollout['next', 'episode_done'].sum())} times, "
    f"TorchRL done {int(rollout['next', 'done'].sum())} time (at t = "
    f"{int(rollout['next', 'done'].nonzero()[0, 0])})"
)

# %% [markdown]
# Things to notice (the goal happens to be (3, 0), on the agent's way: it collects the +1 at
# `t = 2` and walks on, since this policy ignores rewards):
#
# * at `t = 14` the 15th step ends the first inner episode: `episode_done` is True but TorchRL's
#   `done` is not, and the *next observation is the start state* (0, 0), not (4, 0), because the
#   env has already been put back to the start of episode 2. (That is why decoders that predict
#   the next state must mask those steps: `TransitionBatch.valid_next_obs`.)
# * `done` fires once, at the last step, with `truncated=True`: the BAMDP ends on a time limit,
#   so value targets bootstrap there.
# * `step_in_episode` and `episode` are observed: time-aware policies (the Bayes-optimal one)
#   read them; learned agents may ignore them.
#
# `make_env("gridworld", ...)` is the one-line way to get exactly this `BAMDPEnv(GridNaviEnv)`.

# %% [markdown]
# ## 3. The exact belief on GridNavi
#
# In GridNavi the reward is a deterministic function of the goal and the cell the agent lands
# in, so the exact posterior over goals is simple: the prior restricted to the goals consistent
# with every reward seen so far. A -0.1 rules the landing cell out, a +1 pins the goal down.
# `ExactGridBelief` is a TorchRL `Transform` that carries this posterior in the tensordict as
# `("belief", "probs")` (one probability per cell, index `x * 5 + y`): it writes the prior on
# reset (a new task), updates it on every step, and keeps it across inner episodes because
# those are not TorchRL resets. The landing cell is computed from the current position and the
# action, never from the next observation (which is the start state after an inner episode).
#
# Let us watch it along a rollout of a random policy on the task whose goal is (4, 2).

# %%
FIGURE_GOAL = (4, 2)


def one_task_env(goal, episodes=4):
    """A single-task BAMDP env carrying the exact posterior over its goal."""
    base = BAMDPEnv(
        GridNaviEnv(num_envs=1),
        episode_length=15,
        episodes_per_task=episodes,
        fixed_tasks=torch.tensor([list(goal)], dtype=torch.float32),
    )
    return TransformedEnv(base, ExactGridBelief.from_env(base))


def belief_trace(rollout):
    """Positions, exact posterior and inner-episode ends at steps 0..T (t = 0: the prior)."""

    def with_start(key):
        return torch.cat([rollout[key][:1], rollout["next", key]], dim=0)

    done = torch.cat([torch.zeros(1, dtype=torch.bool), rollout["next", "episode_done"][:, 0]])
    return with_start("observation").long(), with_start(BELIEF_PROBS), done


def candidates_left_per_episode(rollout):
    probs = rollout["next", BELIEF_PROBS]
    ends = rollout["next", "episode_done"][:, 0].nonzero().flatten()
    return [int((probs[t] > 0).sum()) for t in ends]


random_env = one_task_env(FIGURE_GOAL)
random_env.set_seed(SEED)
random_rollout = random_env.rollout(60, uniform_random_policy(5, seed=SEED))[0]
remaining = (random_rollout["next", BELIEF_PROBS] > 0).sum(-1)
print("random policy, goal cells still possible after steps 1..15:", remaining[:15].tolist())
print(
    "random policy, candidates left at the end of each episode:",
    candidates_left_per_episode(random_rollout),
)
positions, probs, done = belief_trace(random_rollout)
show(
    plot_belief_rollout(
        positions,
        probs,
        FIGURE_GOAL,
        done,
        OUT / "exact_belief_random_policy",
        max_steps=30,
        title="Random policy, goal (4, 2): exact posterior (first two episodes)",
    )
)

# %% [markdown]
# Every -0.1 on a new cell removes one candidate, so the posterior is uniform over a shrinking
# set: a random walk revisits cells and wastes most of its steps. (The heatmap's rows are the
# inner episodes, one panel per step; `plot_belief_rollout` labels its first set of rows
# "VariBAD decoder" because it is usually fed the decoder's belief, here it is the exact one.)

# %% [markdown]
# ## 4. The Bayes-optimal value
#
# Because the only thing the agent can learn before finding the goal is "not here", the BAMDP
# reduces to a deterministic search over (episodes left, steps left, position, goals not ruled
# out), solved exactly by `BayesOptimalGridNavi` (dynamic programming with exact integer
# scores, well under a second). Its expected return per inner episode is our yardstick.

# %%
solver = BayesOptimalGridNavi(GridNaviSpec(grid_size=5, episode_length=15, episodes_per_task=4))
dp_returns = solver.expected_returns()
print("Bayes-optimal expected return per episode (DP):", " ".join(f"{r:.3f}" for r in dp_returns))
print(f"expected return of walking straight to a known goal: {solver.known_goal_return():.3f}")

# %% [markdown]
# Episode 1 (4.0) is an exploration episode; from episode 2 on the Bayes-optimal agent scores
# exactly what an agent that *knows* the goal scores (11.071): it rules out 14 of the 21
# cells in episode 1 and visits the 7 left in order of distance. Over the whole task it pays a
# little in episode 1 for perfect information afterwards.
#
# `BayesOptimalPolicy` turns the solver into a TorchRL policy that reads the position,
# `step_in_episode`, `episode` and the exact posterior. Running it in the env on every goal
# (a *stratified* env: each of the 21 goals the same number of times, so the mean is the exact
# expectation over the prior) must reproduce the DP numbers. `meta_test` is the evaluation
# every algorithm goes through: seeded test tasks, `k` inner episodes with the belief carried
# across them, the return per episode index.

# %%
test_tasks = 21 if FAST else 210
test_env = TransformedEnv(
    make_env("gridworld", num_envs=test_tasks, seed=SEED, stratified=True),
    exact_belief_transforms(),
)
optimal_policy = BayesOptimalPolicy.from_env(test_env)
optimal = meta_test(test_env, optimal_policy, episodes=4, episode_length=15)
random = meta_test(test_env, uniform_random_policy(5, seed=SEED), episodes=4, episode_length=15)
print(f"meta-test on {test_tasks} stratified test tasks, return per inner episode:")
print("  Bayes-optimal (DP)      ", " ".join(f"{r:7.3f}" for r in dp_returns))
print("  BayesOptimalPolicy (env)", " ".join(f"{r:7.3f}" for r in optimal.mean))
print("  random policy           ", " ".join(f"{r:7.3f}" for r in random.mean))
print("  random policy, s.e.     ", " ".join(f"{s:7.3f}" for s in random.stderr))
matches = all(abs(a - b) < 1e-4 for a, b in zip(optimal.mean, dp_returns, strict=True))
print(f"BayesOptimalPolicy reproduces the DP values: {matches}")
assert matches

# %% [markdown]
# The same policy on the task of the figure above: the exact posterior collapses much faster,
# and from episode 2 on the agent walks straight to the goal.

# %%
bo_env = one_task_env(FIGURE_GOAL)
bo_rollout = bo_env.rollout(60, BayesOptimalPolicy.from_env(bo_env))[0]
print(
    "Bayes-optimal policy, candidates left at the end of each episode:",
    candidates_left_per_episode(bo_rollout),
)
bo_returns = per_episode_returns(bo_rollout[None], 4)[0]
print("its returns per episode:", " ".join(f"{r:.2f}" for r in bo_returns.tolist()))
positions, probs, done = belief_trace(bo_rollout)
show(
    plot_belief_rollout(
        positions,
        probs,
        FIGURE_GOAL,
        done,
        OUT / "exact_belief_bayes_optimal",
        title="Bayes-optimal policy, goal (4, 2): exact posterior",
    )
)

# %% [markdown]
# ## 5. The hyper-state contract
#
# Every algorithm of the toolkit is *a transform that writes a belief* followed by
# `hyper_state_transform`, a `CatTensors` that concatenates the observation and that belief
# into `"hyper_state"`. Policies read `hyper_state` and nothing else, so they never know which
# belief produced it, and swapping VariBAD for RL2, the exact belief or the oracle is swapping a
# transform (tutorial 4 does exactly that):
#
# | algorithm | transform | belief written |
# |---|---|---|
# | VariBAD | `varibad_transforms(encoder)` | `("belief", "mean" / "logvar")` (learned) |
# | belief oracle | `exact_belief_transforms()` | `("belief", "probs")` (exact posterior) |
# | RL2 | `rl2_transforms(gru)` | `("rl2", "hidden")` (memory trained by RL) |
# | oracle | `oracle_transforms()` | the true `task` (not a belief: the upper reference) |
#
# Below, each transform goes on the same base env, and a fresh actor from `make_actor_critic`
# (sized by the hyper-state) acts on it for one BAMDP.

# %%
encoder = BeliefEncoder(obs_dim=2, action_dim=5, discrete_actions=True, latent_dim=5)
rl2_gru = BeliefEncoder(obs_dim=3, action_dim=5, discrete_actions=True, action_embed=8)
contracts = {
    "VariBAD": varibad_transforms(encoder),
    "belief oracle": exact_belief_transforms(),
    "RL2": rl2_transforms(rl2_gru),
    "oracle": oracle_transforms(),
    "observation only": hyper_state_transform(belief_keys=[]),
}
print(f"{'algorithm':17} | hyper_state size | entries added to the base env's")
base_keys = set(make_env("gridworld", num_envs=2).reset().keys(True, True))
for name, transform in contracts.items():
    env = TransformedEnv(make_env("gridworld", num_envs=8, seed=SEED), transform)
    size = env.observation_spec["hyper_state"].shape[-1]
    actor, _critic = make_actor_critic(size, env.action_spec, hidden=[32])
    with torch.no_grad():
        td = env.rollout(env.base_env.horizon, actor, break_when_any_done=False)
    added = set(td.exclude("next").keys(True, True)) - base_keys
    extra = sorted(str(k) for k in added - {"action", "action_log_prob", "logits"})
    print(f"{name:17} | {size:16d} | {', '.join(extra)}")

# %% [markdown]
# (`ExactGridBelief` alone, without the concatenation, is all `BayesOptimalPolicy` needs: that is
# how section 3 used it.)
#
# **Summary.** A BAMDP is a task distribution plus a multi-episode horizon; the Bayes-optimal
# agent acts on (observation, belief). In `torchrl_bamdp`, the task distribution is a
# `TaskEnv`, the horizon is `BAMDPEnv`, the belief is a `Transform` that writes the hyper-state,
# and the policy is any TorchRL actor on `hyper_state`. Tutorial 2 learns the belief with
# VariBAD; tutorial 3 brings your own task family; tutorial 4 swaps the belief.

# %%
print("done: tutorial 1")
