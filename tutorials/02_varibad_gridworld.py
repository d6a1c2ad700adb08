# ---
# jupyter:
#   jupytext:
#     text_representation:
#       extension: .py
#       format_name: percent
# ---

# %% [markdown]
# # Tutorial 2: VariBAD on GridNavi, composed by hand
#
# VariBAD (Zintgraf et al., ICLR 2020) approximates the Bayes-optimal agent of tutorial 1
# when the exact belief is out of reach. It learns
#
# * an **encoder** q(m | tau_:t): a GRU over the transitions seen so far in the task, whose
#   output is a Gaussian over a small latent task embedding m (the *belief*);
# * a **decoder** p(r_{j+1} | m, s_{j+1}) trained, with the encoder, by an ELBO to reconstruct
#   the rewards of the *whole* trajectory (past and future) from the belief at every step t;
# * a **policy** pi(a | s, q) trained by PPO on the hyper-state (observation, belief mean and
#   log-variance).
#
# This tutorial wires these pieces in plain Python: no Hydra, no `Trainer`. Every line of the
# loop below is also in `torchrl_bamdp/trainers/trainer.py` (`_train_frames`, `ppo_update`,
# `elbo_update`), which adds logging, checkpoints, NaN guards and evaluation schedules on top,
# and runs the ELBO update in a second thread while PPO updates (`train.parallel_updates`; the
# same result, faster on 2 cores).
#
# Run: `.venv/bin/python tutorials/02_varibad_gridworld.py` (about 1.5 minutes on 2 CPU cores;
# `BAMDP_TUTORIAL_FAST=1` trains for a few batches only, `BAMDP_TUTORIAL_OUT` sets the output
# folder, default `tutorial_outputs/02_varibad_gridworld`).

# %%
import logging
import os
import shutil
import time
from pathlib import Path

import torch
from torch import nn
from torchrl.collectors import Collector
from torchrl.envs import Compose, ExplorationType, TransformedEnv, set_exploration_type
from torchrl.objectives import ClipPPOLoss
from torchrl.objectives.value import GAE

from torchrl_bamdp.configs import load_config
from torchrl_bamdp.data import TrajectoryBuffer
from torchrl_bamdp.envs import BAMDPEnv, GridNaviEnv, make_env
from torchrl_bamdp.evaluation.meta_test import meta_test
from torchrl_bamdp.evaluation.plots import BeliefRollout, plot_learning_curves
from torchrl_bamdp.evaluation.report import record_belief_rollout
from torchrl_bamdp.modules import BeliefEncoder, GridCellRewardDecoder
from torchrl_bamdp.modules.actor_critic import find_input_normalizers, make_actor_critic
from torchrl_bamdp.objectives import ELBOLoss
from torchrl_bamdp.policies import BayesOptimalGridNavi, GridNaviSpec, uniform_random_policy
from torchrl_bamdp.trainers import Trainer
from torchrl_bamdp.transforms import (
    BELIEF_LOGVAR,
    BELIEF_MEAN,
    BELIEF_PROBS,
    ExactGridBelief,
    VariationalBelief,
    hyper_state_transform,
    varibad_transforms,
)

FAST = os.environ.get("BAMDP_TUTORIAL_FAST", "0") not in ("", "0")
OUT = Path(os.environ.get("BAMDP_TUTORIAL_OUT", Path("tutorial_outputs") / "02_varibad_gridworld"))
OUT.mkdir(parents=True, exist_ok=True)
SEED = 0
torch.manual_seed(SEED)
torch.set_num_threads(1)  # small batched envs: one thread is the fastest (DESIGN.md §6)
logging.getLogger("torchrl").setLevel(logging.WARNING)

# The budget: whole tasks per batch (64 envs x 60 steps); 300 batches = 1.15M frames.
NUM_ENVS = 16 if FAST else 64
ITERATIONS = 3 if FAST else 300
EVAL_EVERY = 1 if FAST else 25
EVAL_TASKS = 21 if FAST else 210  # stratified: each of the 21 goals equally often
EPISODE_LENGTH, EPISODES = 15, 4
HORIZON = EPISODE_LENGTH * EPISODES
print(f"fast mode: {FAST}; {NUM_ENVS} envs x {ITERATIONS} batches; outputs in {OUT}")


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
# ## 1. Env, belief, hyper-state
#
# The env is GridNavi inside the multi-episode BAMDP horizon (tutorial 1). The belief is a
# TorchRL `Transform`, `VariationalBelief`, that owns a reference to the encoder:
#
# * on `reset` (TorchRL's reset, i.e. a *new task*) it writes the prior N(0, I) and a zero GRU
#   state; inner-episode ends are not TorchRL resets, so the belief is carried across the inner
#   episodes of a task, exactly what the agent needs to exploit in episode 2 what it explored in
#   episode 1;
# * on every step it runs one GRU step on (a_t, r_{t+1}, s_{t+1}) and writes
#   `("belief", "mean" / "logvar" / "hidden")` into the next tensordict, without gradients
#   (`track_gradients=False`), so collection never builds a graph through time.
#
# `hyper_state_transform()` then concatenates observation, mean and log-variance into
# `"hyper_state"`, the only input of the policy. (`varibad_transforms(encoder)` is these two
# transforms in one call.)

# %%
base_env = make_env(
    "gridworld",
    num_envs=NUM_ENVS,
    episode_length=EPISODE_LENGTH,
    episodes_per_task=EPISODES,
    seed=SEED,
)
encoder = BeliefEncoder(
    obs_dim=2,
    action_dim=5,
    discrete_actions=True,
    latent_dim=5,
    hidden_size=64,
    obs_embed=32,
    action_embed=0,  # as the original on GridNavi: the reward and the new cell suffice
    reward_embed=8,
)
env = TransformedEnv(base_env, Compose(VariationalBelief(encoder), hyper_state_transform()))
td = env.reset()
print("hyper_state at a task start:", td["hyper_state"][0].tolist())
print("hyper_state size:", env.observation_spec["hyper_state"].shape[-1], "= 2 + 5 + 5")

# %% [markdown]
# ## 2. Policy, losses, buffer, collector
#
# * `make_actor_critic` builds a categorical PPO actor and a critic on `hyper_state` with a
#   shared running normaliser of the input (as the original implementation).
# * PPO is TorchRL's own `ClipPPOLoss` with `GAE`. The PPO gradient does not reach the
#   encoder: the belief is a *stored input*, computed during collection with the encoder
#   weights of that moment (DESIGN.md §2).
# * The ELBO is `ELBOLoss`, a TorchRL `LossModule` holding the *same* encoder instance as the
#   transform, so collection always uses the latest encoder weights. It re-encodes whole
#   trajectories with gradients (the belief is a function of the whole past, so one cannot
#   train it on shuffled single transitions the way PPO is trained) and decodes past *and*
#   future rewards from the belief at (15 sampled) steps t; on GridNavi the decoder is one
#   Bernoulli "the goal is here" logit per cell.
# * `TrajectoryBuffer` stores whole BAMDP trajectories (one task each) cut out of the
#   collector batches, a bounded FIFO of recent tasks the ELBO samples from.
# * `Collector` steps the transformed env with the actor under `torch.no_grad()`; each batch
#   holds whole tasks (`NUM_ENVS x 60` frames), so no trajectory mixes two encoder versions.

# %%
actor, critic = make_actor_critic(2 + 2 * 5, env.action_spec, hidden=[64, 64])
reward_decoder = GridCellRewardDecoder(latent_dim=5, grid_size=5, hidden=[64, 64])
elbo_loss = ELBOLoss(encoder, reward_decoder=reward_decoder, elbo_subsample=15)
KL_WEIGHT = 0.01

gae = GAE(gamma=0.99, lmbda=0.95, value_network=critic, average_gae=False)
ppo_loss = ClipPPOLoss(
    actor,
    critic,
    clip_epsilon=0.2,
    entropy_coeff=0.01,
    critic_coeff=0.5,
    loss_critic_type="smooth_l1",
    normalize_advantage=True,
)
policy_params = list(actor.parameters()) + list(critic.parameters())
ppo_optimizer = torch.optim.Adam(policy_params, lr=1e-3, eps=1e-5)
elbo_optimizer = torch.optim.Adam(elbo_loss.parameters(), lr=3e-3)
normalizer = find_input_normalizers(actor)[0]  # shared by actor and critic

buffer = TrajectoryBuffer(
    capacity=1000, horizon=HORIZON, generator=torch.Generator().manual_seed(SEED)
)
collector = Collector(
    env,
    actor,
    frames_per_batch=NUM_ENVS * HORIZON,
    total_frames=ITERATIONS * NUM_ENVS * HORIZON,
    auto_register_policy_transforms=False,
)
print("ELBO trains", sum(p.numel() for p in elbo_loss.parameters()), "parameters (encoder+decoder)")
print("PPO trains", sum(p.numel() for p in policy_params), "parameters (actor+critic)")

# %% [markdown]
# Meta-test (used during and after training): fixed *stratified* test tasks (each of the 21
# goals equally often), greedy actions, the belief carried across 4 inner episodes; with a
# greedy policy the mean over the 21 goals is the exact expected return over the prior. The
# test env gets a fresh `VariationalBelief` around the same encoder.

# %%
test_env = TransformedEnv(
    make_env("gridworld", num_envs=EVAL_TASKS, seed=12345, stratified=True),
    varibad_transforms(encoder),
)


def evaluate(policy=actor):
    return meta_test(test_env, policy, episodes=EPISODES, episode_length=EPISODE_LENGTH)


# %% [markdown]
# ## 3. The training loop
#
# One iteration = one collector batch of whole tasks:
#
# 1. store the finished trajectories in the buffer;
# 2. PPO: GAE on the batch (no gradient), then `4 epochs x 16 minibatches` of shuffled frames:
#    PPO trains on the beliefs *stored* in the batch, so frames can be shuffled freely;
# 3. update the input normaliser (after the epochs, so the stored log-probabilities come from
#    the policy the PPO ratio starts from);
# 4. ELBO: 4 updates on 100 trajectories sampled from the buffer,
#    loss = reward NLL + 0.01 x KL (the trainer clips the total gradient norm at 5000 to catch
#    rare spikes; we do the same).


# %%
def ppo_update(batch, epochs=4, minibatches=16):
    with torch.no_grad():
        gae(batch)  # writes advantage and value_target
    flat = batch.reshape(-1)
    for _ in range(epochs):
        for minibatch in flat[torch.randperm(flat.shape[0])].split(flat.shape[0] // minibatches):
            losses = ppo_loss(minibatch)
            loss = losses["loss_objective"] + losses["loss_critic"] + losses["loss_entropy"]
            ppo_optimizer.zero_grad()
            loss.backward()
            nn.utils.clip_grad_norm_(policy_params, 0.5)
            ppo_optimizer.step()
    normalizer.update(batch["hyper_state"])


def elbo_update(updates=4, trajectories=100):
    for _ in range(updates):
        terms = elbo_loss(buffer.sample(trajectories))
        loss = terms["loss_reward"] + KL_WEIGHT * terms["loss_kl"]
        elbo_optimizer.zero_grad()
        loss.backward()
        nn.utils.clip_grad_norm_(elbo_loss.parameters(), 5000.0)
        elbo_optimizer.step()
    return {k: float(v.detach()) for k, v in terms.items()}


curve_frames, curve_returns = [0], [sum(evaluate().mean)]
frames, start = 0, time.perf_counter()
for iteration, batch in enumerate(collector, start=1):
    frames += batch.numel()
    buffer.extend_from_batch(batch)
    ppo_update(batch)
    elbo_terms = elbo_update()
    if iteration % EVAL_EVERY == 0 or iteration == ITERATIONS:
        curve_frames.append(frames)
        curve_returns.append(sum(evaluate().mean))
        train_return = batch["next", "reward"].sum(1).mean()  # each row is one whole task
        print(
            f"iter {iteration:4d} | {frames:8d} frames | {time.perf_counter() - start:6.1f} s | "
            f"train return/task {float(train_return):6.2f} | test return/task "
            f"{curve_returns[-1]:6.2f} | ELBO reward NLL {elbo_terms['loss_reward']:7.1f}"
        )
collector.shutdown()
train_seconds = time.perf_counter() - start
print(f"trained on {frames} frames in {train_seconds:.0f} s ({frames / train_seconds:.0f} fps)")

# %% [markdown]
# ## 4. Meta-test: VariBAD vs random vs Bayes-optimal
#
# The same test tasks for the trained agent and for a random policy; the Bayes-optimal
# numbers are exact (tutorial 1).

# %%
varibad = evaluate()
random = evaluate(uniform_random_policy(5, seed=SEED))
optimal = BayesOptimalGridNavi(GridNaviSpec(episode_length=EPISODE_LENGTH, episodes_per_task=4))
rows = {
    "VariBAD (this tutorial)": varibad.mean,
    "random policy": random.mean,
    "Bayes-optimal (exact DP)": optimal.expected_returns(),
}
print(f"meta-test return per inner episode ({EVAL_TASKS} test tasks, {frames} training frames)")
print(f"{'policy':26}" + "".join(f"  episode {k + 1}" for k in range(EPISODES)) + "      total")
for name, values in rows.items():
    print(f"{name:26}" + "".join(f"{v:11.3f}" for v in values) + f"{sum(values):11.3f}")

show(
    plot_learning_curves(
        {"VariBAD (greedy, 4 episodes)": (curve_frames, curve_returns, None)},
        OUT / "learning_curve",
        references={"Bayes-optimal (DP)": sum(optimal.expected_returns())},
        title="GridNavi test return during training",
    )
)

# %% [markdown]
# With this budget (about a million frames, under two minutes) the agent has learnt to use
# its belief (later episodes score more than the first one, and far more than a random
# policy) but it is not Bayes-optimal yet: exploration in episode 1 and the tour through the
# cells left are still being learnt. `make demo` trains the same agent for 3M frames
# ([3.74, 9.60, 10.02, 10.08]) and the README's 14-minute benchmark gets close to the optimum.
# Greedy test returns of a single run also jump between evaluations (the learning curve is
# not monotone), so a short run's final number is partly luck: compare seeds, not single runs.
#
# ## 5. What the belief looks like (Fig 3a and 3b of the paper)
#
# We roll the trained agent out on one test task (goal (4, 2)) and record, at every step, the
# decoder's per-cell goal probability for the belief mean, next to the exact posterior
# (`ExactGridBelief` appended to the same env: transforms compose). This is a `BeliefRollout`
# built by hand from the rollout's tensordict.

# %%
GOAL = (4, 2)
one_task = BAMDPEnv(
    GridNaviEnv(num_envs=1),
    episode_length=EPISODE_LENGTH,
    episodes_per_task=EPISODES,
    fixed_tasks=torch.tensor([GOAL], dtype=torch.float32),
)
rollout_env = TransformedEnv(one_task, varibad_transforms(encoder))
rollout_env.append_transform(ExactGridBelief(grid_size=5))
with torch.no_grad(), set_exploration_type(ExplorationType.DETERMINISTIC):
    rollout = rollout_env.rollout(HORIZON, actor, break_when_any_done=False)[0]


def with_start(key):
    """Steps 0..T of an entry: the reset value, then the value after every step."""
    return torch.cat([rollout[key][:1], rollout["next", key]], dim=0)


with torch.no_grad():
    mean = with_start(BELIEF_MEAN)
    by_hand = BeliefRollout(
        positions=with_start("observation").long(),
        reward_probs=reward_decoder.probabilities(mean),
        goal=GOAL,
        episode_done=torch.cat(
            [torch.zeros(1, dtype=torch.bool), rollout["next", "episode_done"][:, 0]]
        ),
        mean=mean,
        logvar=with_start(BELIEF_LOGVAR),
        exact_probs=with_start(BELIEF_PROBS),
        grid_size=5,
    )
returns = [
    float(rollout["next", "reward"][rollout["episode"][:, 0] == k].sum()) for k in range(EPISODES)
]
print(f"returns on the task with goal {GOAL}:", " ".join(f"{r:.1f}" for r in returns))
show(by_hand.plot_belief(OUT / "fig3a_belief_rollout", title=f"VariBAD belief, goal {GOAL}"))
show(by_hand.plot_latents(OUT / "fig3b_latents", title=f"VariBAD latent, goal {GOAL}"))

# %% [markdown]
# Top rows: the decoder's probability that the goal is in each cell, for the belief the policy
# conditions on at that step; bottom rows: the exact posterior. A well-trained decoder paints
# visited cells dark, keeps the unvisited ones bright, and collapses onto the goal once it is
# found; the latent log-variance (Fig 3b) drops as the agent learns about the task, and
# nothing resets at the inner-episode boundaries (dashed lines).
#
# ## 6. The shortcut: `Trainer` and `record_belief_rollout`
#
# `Trainer(config, run_dir)` builds exactly these pieces from a validated config and runs this
# loop with logging, checkpoints and evaluation. Its GridNavi defaults add inputs that this
# hand-built agent leaves out: the decoded belief instead of the latent (`algo.policy_belief`)
# and the time of the task (`algo.ppo.time_features`) for the policy and the critic, and the true
# task for the critic only (`algo.ppo.critic_task`, a privileged critic used in training); they
# also anneal the entropy coefficient from 0.03 to 0 (see the README). We set the three inputs
# to this agent's.
# To show that the hand-built agent and the trainer's agent are the same thing, we load our
# trained weights into a trainer's agent (no training) and let it evaluate and record the
# belief rollout: the numbers and the figure are the same.

# %%
config = load_config(
    {
        "seed": SEED,
        "env": {"num_envs": NUM_ENVS},
        "algo": {
            "policy_belief": "latent",
            "ppo": {"time_features": False, "critic_task": False},
        },
        "train": {"eval_tasks": EVAL_TASKS, "progress_bar": False, "figures": False},
    }
)
shutil.rmtree(OUT / "trainer_run", ignore_errors=True)  # a fresh run directory
trainer = Trainer(config, OUT / "trainer_run")
trainer.agent.elbo_loss.load_state_dict(elbo_loss.state_dict())
trainer.agent.actor.load_state_dict(actor.state_dict())
trainer.agent.critic.load_state_dict(critic.state_dict())
print("Trainer.evaluate():", " ".join(f"{m:.3f}" for m in trainer.evaluate().mean))
print("our meta_test:     ", " ".join(f"{m:.3f}" for m in varibad.mean))
recorded = record_belief_rollout(trainer.agent, trainer.config, GOAL)
same = bool((recorded.positions == by_hand.positions).all())
print(f"record_belief_rollout gives the same path as the hand-built rollout: {same}")
show(recorded.plot_belief(OUT / "fig3a_via_trainer", title=f"Same, via the Trainer, goal {GOAL}"))
# To train with it instead: Trainer(load_config({...}), run_dir).train()  (or `bamdp-train`).

# %% [markdown]
# **Design choices, recap.**
#
# * The belief is a `Transform`: the env, the collector and the policy are stock TorchRL, and
#   the belief resets exactly when TorchRL resets, i.e. only on a new task.
# * Collection runs under `no_grad`; the belief stored in each batch is what PPO trains on
#   (cheap, and shuffling frames is fine). The encoder learns from the ELBO alone (an option,
#   `algo.ppo.encoder_grad`, re-encodes with gradients so that PPO trains it too).
# * The ELBO re-encodes *whole* trajectories from the buffer with gradients and decodes every
#   step's reward from the belief at sampled steps: the belief must explain the past and
#   predict the future of the task.
# * One encoder instance is shared by the transform and the loss, so the next collection uses
#   the latest weights without any syncing.

# %%
print("done: tutorial 2")
