"""Collection throughput: what the TorchRL stack costs on top of the raw MuJoCo simulators.

For ``cheetah_vel`` with ``--num-envs`` (default 16) simulators, in one process, on one torch
thread (``torch.set_num_threads(1)``), under ``torch.no_grad()``:

* ``gym_sync_vector``   -- (a) the reference: ``gymnasium.vector.SyncVectorEnv`` of
  ``HalfCheetah-v5`` (``gymnasium.make`` defaults: 1000-step ``TimeLimit``), gymnasium's default
  autoreset mode (``NEXT_STEP``: the step after an episode end resets that sub-env), uniformly
  random float32 numpy actions from a seeded ``numpy.random.Generator``; no torch.
* ``varibad_collector`` -- (b) ``torchrl.collectors.Collector`` over the VariBAD-transformed
  BAMDP env with the VariBAD policy, built as ``Trainer`` builds it: the packaged Hydra config
  (``env=cheetah_vel``), ``make_env`` + ``build_agent`` + ``agent.transformed_env``,
  ``frames_per_batch = num_envs * horizon`` (whole tasks), ``device="cpu"``,
  ``auto_register_policy_transforms=False``; one endless collector, ``ceil(steps / horizon)``
  batches per timed run.
* ``rl2_collector``     -- (c) the same with the RL2 agent (``algo=rl2``, ``encoder_grad=true``).
* ``bamdp_rollout``     -- (d) the BAMDP env alone: ``make_env(...).rollout(steps,
  break_when_any_done=False)`` with random actions (no transforms, no policy).
* ``varibad_collector_workers`` -- (e) (b) with the simulators in ``--workers`` worker
  processes (``env.workers``); belief transform and policy stay batched in this process.
* ``gym_async_vector``  -- (f) a second reference: ``gymnasium.vector.AsyncVectorEnv`` (one
  process per simulator, shared memory), random actions as (a).
* ``varibad_collector_threads`` -- (g) (b) with the simulator loop split into ``--sim-threads``
  contiguous shards stepped by Python threads at every step (``mujoco.mj_step`` releases the
  GIL; gymnasium's ``_get_obs`` does not): the simulators' C code on both cores.
* ``varibad_collector_rollout_<k>`` -- (h) (b) with the simulators stepped by MuJoCo's batched
  ``mujoco.rollout.Rollout(nthread=k)``, one call per step, for k = 0 (MuJoCo's C loop in this
  thread) and k = ``--sim-threads`` (its C thread pool); the observation is read from the
  returned state (HalfCheetah v5: ``qpos[1:]``, ``qvel``), not by gymnasium's ``_get_obs``.

(g) and (h) replace the simulator loop of the benchmark's own env only (benchmark code, not an
env option); ``simulator_agreement`` reports how far their observations and rewards are from the
in-process loop's over ``--steps`` steps of random actions: the threads are bit-identical;
``mujoco.rollout`` starts every call without the solver's warm start (``qacc_warmstart`` is not
part of the state it takes), so its trajectories drift away from the loop's over hundreds of
steps.

The collectors act with ``agent.acting_policy`` (``SamplingPolicy``: actions only; the trainer
adds PPO's log-probabilities per batch), as ``Trainer`` does.

The BAMDP is ``episode_length`` (default 200) x 2 episodes, as ``configs/env/cheetah_vel.yaml``.
Every variant runs once untimed (warm-up), then ``repeats`` rounds run every variant once each,
interleaved (a b c d a b c d ...), so that load from other processes hits all variants alike. Per
variant the median frames/s is reported, with the ratio of medians to (a) and the median of the
per-round ratios. The 0.7 target is on (b)/(a).

Also: GridNavi and the sparse point robot at ``--pure-torch-num-envs`` (default 1024) envs, one
BAMDP per timed run (BAMDP rollout with random actions, and the VariBAD collector); per-component
costs in microseconds per vector step (simulator loop, task env, BAMDP env, belief GRU, policy,
...) timed without a profiler; and a cProfile of (b) grouped by where the time goes
(``--no-profile`` skips it).

Run it with::

    .venv/bin/python benchmarks/collection_throughput.py        # about 25 s on 2 loaded cores
    .venv/bin/python benchmarks/collection_throughput.py --num-envs 16 --steps 400 --repeats 5
"""

from __future__ import annotations

import argparse
import cProfile
import math
import os
import platform
import pstats
import statistics
import sys
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import gymnasium
import mujoco
import numpy as np
import tensordict
import torch
import torchrl
from tensordict import TensorDict
from torchrl.collectors import Collector

from torchrl_bamdp.cli import compose_config
from torchrl_bamdp.configs import Config
from torchrl_bamdp.envs import make_env_from_config
from torchrl_bamdp.trainers.agents import build_agent
from torchrl_bamdp.utils import write_result_json

FAMILY = "cheetah_vel"
GYM_ID = "HalfCheetah-v5"
EPISODES_PER_TASK = 2
DEFAULT_EPISODE_LENGTH = 200
PURE_TORCH_FAMILIES = ("gridworld", "point_robot_sparse")
REFERENCE = "gym_sync_vector"
DEFAULT_WORKERS = 2
TARGET = {"variant": "varibad_collector", "ratio_to_reference": 0.7}
DEFAULT_OUT = Path(__file__).resolve().parent / "results" / "collection_throughput.json"

DESCRIPTIONS = {
    "gym_sync_vector": "(a) gymnasium SyncVectorEnv, HalfCheetah-v5, numpy random actions",
    "varibad_collector": "(b) Collector, VariBAD belief transforms + VariBAD policy",
    "rl2_collector": "(c) Collector, RL2 memory transforms + RL2 policy",
    "bamdp_rollout": "(d) BAMDPEnv.rollout, random actions, no transforms/policy",
    "varibad_collector_workers": "(e) (b) with the simulators in worker processes",
    "gym_async_vector": "(f) gymnasium AsyncVectorEnv (a process per env), random actions",
    "varibad_collector_threads": "(g) (b) with the simulator loop in Python threads",
    "varibad_collector_rollout_0": "(h) (b) with mujoco.rollout stepping, nthread=0",
}
#: (h) with its C thread pool: the description of ``varibad_collector_rollout_<k>``, k >= 1.
ROLLOUT_THREADS_DESCRIPTION = "(h) (b) with mujoco.rollout stepping, nthread={k}"
PURE_TORCH_DESCRIPTIONS = {
    "bamdp_rollout": "BAMDPEnv.rollout, random actions",
    "varibad_collector": "Collector, VariBAD transforms + policy",
}


# -- building blocks ---------------------------------------------------------------------------
def agent_config(
    family: str, algo: str, num_envs: int, episode_length: int | None, workers: int = 0
) -> Config:
    """The packaged training config (as ``bamdp-train`` composes it) for ``family``/``algo``.

    PPO minibatches are set to 1: they do not affect collection, and the default (16) must
    divide ``num_envs`` for RL2.
    """
    overrides = [f"env={family}", f"algo={algo}", f"env.num_envs={num_envs}"]
    overrides.append(f"env.workers={workers}")
    overrides.append("algo.ppo.minibatches=1")
    if episode_length is not None:
        overrides.append(f"env.episode_length={episode_length}")
    return compose_config(overrides)


@dataclass
class Stack:
    """A trainer-like stack: config, BAMDP env, agent and the agent's transformed env."""

    config: Config
    env: Any
    agent: Any
    train_env: Any

    @classmethod
    def build(cls, config: Config) -> Stack:
        torch.manual_seed(config.seed)  # network initialisation, as Trainer
        env = make_env_from_config(config.env, config.seed, torch.device(config.device))
        agent = build_agent(config, env).to(torch.device(config.device))
        return cls(config, env, agent, agent.transformed_env(env))


@dataclass
class Variant:
    """``run()`` steps the variant once and returns the number of frames; ``close()`` frees it."""

    run: Callable[[], int]
    close: Callable[[], None] = lambda: None


def _gym_vector(vector_cls: type, num_envs: int, steps: int, seed: int, **kwargs) -> Variant:
    """A gymnasium vector env of ``HalfCheetah-v5`` stepped with seeded random numpy actions."""
    from gymnasium.vector import AutoresetMode

    env = vector_cls(
        [lambda: gymnasium.make(GYM_ID) for _ in range(num_envs)],
        autoreset_mode=AutoresetMode.NEXT_STEP,
        **kwargs,
    )
    env.reset(seed=seed)
    space = env.single_action_space
    low, high = space.low, space.high
    shape = (num_envs, *space.shape)
    rng = np.random.default_rng(seed)

    def run() -> int:
        for _ in range(steps):
            env.step(rng.uniform(low, high, size=shape).astype(np.float32))
        return num_envs * steps

    return Variant(run, env.close)


def gym_sync_vector(num_envs: int, steps: int, seed: int) -> Variant:
    from gymnasium.vector import SyncVectorEnv

    return _gym_vector(SyncVectorEnv, num_envs, steps, seed)


def gym_async_vector(num_envs: int, steps: int, seed: int) -> Variant:
    from gymnasium.vector import AsyncVectorEnv

    return _gym_vector(AsyncVectorEnv, num_envs, steps, seed, shared_memory=True)


def bamdp_rollout(config: Config, steps: int) -> Variant:
    env = make_env_from_config(config.env, config.seed)

    def run() -> int:
        return env.rollout(steps, break_when_any_done=False).numel()

    return Variant(run, env.close)


def collector_batches(steps: int, horizon: int) -> int:
    """Whole-task batches (``num_envs * horizon`` frames) that cover ``steps`` env steps."""
    return max(1, math.ceil(steps / horizon))


def make_collector(stack: Stack) -> Collector:
    """The collector of ``Trainer._train_frames`` (endless here: batches are pulled on demand)."""
    return Collector(
        stack.train_env,
        stack.agent.acting_policy,
        frames_per_batch=stack.config.frames_per_batch,
        total_frames=-1,
        device=torch.device(stack.config.device),
        auto_register_policy_transforms=False,
    )


def collector_variant(
    config: Config, steps: int, simulator: tuple[str, int] | None = None
) -> Variant:
    """(b)'s collector over ``config``; ``simulator=(kind, threads)``: its simulators stepped
    by ``kind`` (``threads``: variant g, ``rollout``: h; see :func:`replace_simulator`)."""
    stack = Stack.build(config)
    close_simulator = (
        replace_simulator(stack.env.task_env, *simulator) if simulator else (lambda: None)
    )
    collector = make_collector(stack)
    batches = iter(collector)
    num = collector_batches(steps, config.env.horizon)

    def run() -> int:
        return sum(next(batches).numel() for _ in range(num))

    def close() -> None:
        collector.shutdown()
        close_simulator()
        stack.train_env.close()

    return Variant(run, close)


# -- other ways of stepping the simulators (variants g, h) --------------------------------------
def threaded_simulator(task_env: Any, threads: int) -> Callable[[], None]:
    """Step ``task_env``'s simulators in ``threads`` contiguous shards, one per thread, at
    every step (this thread takes the first); returns the function that stops the threads."""
    n = task_env.num_envs
    bounds = np.linspace(0, n, threads + 1).round().astype(int)
    shards = [(int(a), int(b)) for a, b in zip(bounds[:-1], bounds[1:], strict=True) if b > a]
    pool = ThreadPoolExecutor(max(1, len(shards) - 1), thread_name_prefix="simulators")

    def simulate(action: np.ndarray) -> tuple[np.ndarray, ...]:
        pdim = task_env.position_dim
        out = (np.empty((n, pdim)), np.empty((n, pdim)), np.ones(n, dtype=bool), np.zeros(n))
        futures = [pool.submit(task_env._simulate_range, action, a, b, *out) for a, b in shards[1:]]
        task_env._simulate_range(action, *shards[0], *out)
        for future in futures:
            future.result()
        return out

    task_env._simulate = simulate
    return pool.shutdown


def rollout_simulator(task_env: Any, nthread: int) -> Callable[[], None]:
    """Step ``task_env``'s HalfCheetah simulators with ``mujoco.rollout`` (one call per step,
    ``nthread`` C threads; 0: this thread); returns the function that stops its thread pool.

    The state lives in an array between steps (the simulators' own ``MjData`` are read only at
    resets), and the observation is HalfCheetah v5's from that state: ``qpos[1:]``, ``qvel``.
    Each call starts the constraint solver cold (the warm start is not in the state), so the
    numbers drift from the loop's over long rollouts: a speed measurement, not a simulator.
    """
    from mujoco import rollout

    envs, n = task_env.envs, task_env.num_envs
    model = envs[0].model
    if task_env.gym_id != GYM_ID or task_env.has_contact or task_env.has_healthy:
        raise ValueError(f"rollout_simulator reads {GYM_ID} observations (got {task_env.gym_id})")
    spec = mujoco.mjtState.mjSTATE_FULLPHYSICS
    nstate, substeps = mujoco.mj_stateSize(model, spec), task_env.substeps
    state = np.empty((n, nstate))
    out = np.empty((n, substeps, nstate))
    control = np.empty((n, substeps, model.nu))
    models = [env.model for env in envs]
    scratch = [mujoco.MjData(model) for _ in range(max(1, nthread))]
    pool = rollout.Rollout(nthread=nthread)
    nq, nv = model.nq, model.nv
    obs = task_env._obs

    def pull(indices: Any) -> None:
        for i in indices:
            mujoco.mj_getState(envs[i].model, envs[i].data, state[i], spec)

    reset_loop = task_env._reset_simulators

    def reset(indices: np.ndarray, tasks: np.ndarray) -> None:
        reset_loop(indices, tasks)
        pull(indices.tolist())

    def simulate(action: np.ndarray) -> tuple[np.ndarray, ...]:
        before = state[:, 1:2].copy()  # the state is (time, qpos, qvel, ...): qpos[0]
        control[:] = action[:, None, :]
        pool.rollout(
            models,
            scratch,
            state,
            control,
            nstep=substeps,
            skip_checks=True,
            state=out,
            control_spec=mujoco.mjtState.mjSTATE_CTRL.value,
        )
        state[:] = out[:, -1]
        obs[:, : nq - 1] = state[:, 2 : 1 + nq]
        obs[:, nq - 1 :] = state[:, 1 + nq : 1 + nq + nv]
        return before, state[:, 1:2].copy(), np.ones(n, dtype=bool), np.zeros(n)

    pull(range(n))
    task_env._reset_simulators = reset
    task_env._simulate = simulate
    return pool.close


def replace_simulator(task_env: Any, kind: str, threads: int) -> Callable[[], None]:
    """``threads`` (g) or ``rollout`` (h) stepping in ``task_env``; returns its closer."""
    if kind == "threads":
        return threaded_simulator(task_env, threads)
    return rollout_simulator(task_env, threads)


def simulator_agreement(
    config: Config, kind: str, threads: int, steps: int
) -> dict[str, float | int]:
    """Max |difference| of observations and rewards between the in-process loop and ``kind``
    stepping, two BAMDP envs from the same seed stepped with the same random actions."""
    loop = make_env_from_config(config.env, config.seed)
    other = make_env_from_config(config.env, config.seed)
    close = replace_simulator(other.task_env, kind, threads)
    generator = torch.Generator().manual_seed(config.seed)
    try:
        a, b = loop.reset(), other.reset()
        obs_diff = float((a["observation"] - b["observation"]).abs().max())
        reward_diff = 0.0
        low, high = loop.action_spec.low, loop.action_spec.high
        for _ in range(steps):
            action = low + torch.rand(low.shape, generator=generator) * (high - low)
            step_a, a = loop.step_and_maybe_reset(a.set("action", action))
            step_b, b = other.step_and_maybe_reset(b.set("action", action.clone()))
            for key in ("observation", "reward"):
                diff = float((step_a["next", key] - step_b["next", key]).abs().max())
                if key == "observation":
                    obs_diff = max(obs_diff, diff)
                else:
                    reward_diff = max(reward_diff, diff)
    finally:
        close()
        loop.close()
        other.close()
    return {"steps": steps, "max_abs_observation": obs_diff, "max_abs_reward": reward_diff}


# -- measurement -------------------------------------------------------------------------------
def measure_interleaved(variants: dict[str, Variant], repeats: int) -> dict[str, dict[str, Any]]:
    """Warm up every variant, then ``repeats`` rounds of one timed run of each, in turn."""
    for variant in variants.values():
        variant.run()
    seconds: dict[str, list[float]] = {name: [] for name in variants}
    frames: dict[str, int] = {}
    for _ in range(repeats):
        for name, variant in variants.items():
            start = time.perf_counter()
            frames[name] = variant.run()
            seconds[name].append(time.perf_counter() - start)
    results = {}
    for name in variants:
        fps = [frames[name] / s for s in seconds[name]]
        results[name] = {
            "frames": frames[name],
            "seconds": seconds[name],
            "frames_per_s_all": fps,
            "frames_per_s": statistics.median(fps),
        }
    return results


def add_ratios(results: dict[str, dict[str, Any]], reference: str) -> None:
    """Ratio of medians and median of the per-round (paired) ratios to ``reference``."""
    ref = results[reference]
    for res in results.values():
        res["ratio_to_reference"] = res["frames_per_s"] / ref["frames_per_s"]
        paired = [
            f / r for f, r in zip(res["frames_per_s_all"], ref["frames_per_s_all"], strict=True)
        ]
        res["paired_ratio_median"] = statistics.median(paired)


def time_call(fn: Callable[[], Any], calls: int, repeats: int = 3) -> float:
    """Median over ``repeats`` of the mean wall time of ``calls`` calls, in microseconds."""
    fn()
    per_call = []
    for _ in range(repeats):
        start = time.perf_counter()
        for _ in range(calls):
            fn()
        per_call.append((time.perf_counter() - start) / calls * 1e6)
    return statistics.median(per_call)


def component_costs(config: Config, calls: int, collector_fps: float) -> dict[str, float]:
    """Microseconds per vector step of each layer of (b), each timed alone (no profiler).

    Layers nest: ``simulator`` (MuJoCo ``mj_step`` x frame_skip + gymnasium's ``_get_obs``) is
    inside ``task_env_step`` (``MujocoTaskEnv._step``), inside ``bamdp_step``
    (``BAMDPEnv._step``), inside ``bamdp_env_step`` (the public ``EnvBase.step``), inside
    ``varibad_env_step`` (``TransformedEnv.step``: also the belief GRU and ``hyper_state``);
    ``policy`` is the acting policy's forward (``SamplingPolicy``, what the collector runs),
    ``policy_probabilistic_actor`` TorchRL's ``ProbabilisticActor`` on the same network (with
    log-probabilities); ``collector`` is (b) per step.
    """
    stack = Stack.build(config)
    env, train_env, actor = stack.env, stack.train_env, stack.agent.acting_policy
    task_env = env.task_env
    n = task_env.num_envs
    rng = np.random.default_rng(config.seed)
    actions = rng.uniform(task_env.action_low, task_env.action_high, (n, task_env.action_dim))

    def simulator() -> None:
        for i, sim in enumerate(task_env.envs):
            sim.data.ctrl[:] = actions[i]
            mujoco.mj_step(sim.model, sim.data, nstep=task_env.substeps)
            sim._get_obs()

    costs: dict[str, float] = {}
    with torch.no_grad():
        td = train_env.reset()
        td = actor(td)
        step_td = TensorDict({"action": td["action"]}, batch_size=env.batch_size)
        encoder = stack.agent.encoder
        gru_args = (
            td["action"],
            torch.zeros(n, 1),
            td["observation"],
            td["belief", "hidden"],
        )
        costs["simulator"] = time_call(simulator, calls)
        costs["task_env_step"] = time_call(lambda: task_env._step(step_td), calls)
        costs["bamdp_step"] = time_call(lambda: env._step(step_td), calls)
        costs["bamdp_env_step"] = time_call(lambda: env.step(step_td.copy()), calls)
        costs["varibad_env_step"] = time_call(lambda: train_env.step(td.copy()), calls)
        costs["belief_gru"] = time_call(lambda: encoder.step(*gru_args), calls)
        costs["policy"] = time_call(lambda: actor(td.copy()), calls)
        costs["policy_probabilistic_actor"] = time_call(lambda: stack.agent.actor(td.copy()), calls)
    costs["collector"] = 1e6 * n / collector_fps
    # What the collector loop adds around env.step and the policy (step_mdp, resets, carrier
    # updates, the per-step copy to the storing device, stacking the batch).
    costs["collector_loop_overhead"] = (
        costs["collector"] - costs["varibad_env_step"] - costs["policy"]
    )
    train_env.close()
    return costs


# cProfile groups: (label, match) with match(filename, function name); the cumulative time of
# the outermost matching call is used.
def _matcher(path_end: str, name: str) -> Callable[[str, str], bool]:
    return lambda filename, func: func == name and filename.replace("\\", "/").endswith(path_end)


PROFILE_NODES: dict[str, Callable[[str, str], bool]] = {
    "rollout": _matcher("torchrl/collectors/_single.py", "rollout"),
    "step_and_maybe_reset": _matcher("torchrl/envs/common.py", "_step_and_maybe_reset"),
    "policy": _matcher("torchrl_bamdp/modules/actor_critic.py", "forward"),
    "bamdp_step": _matcher("torchrl_bamdp/envs/bamdp.py", "_step"),
    "bamdp_reset": _matcher("torchrl_bamdp/envs/bamdp.py", "_reset"),
    "task_env_step": _matcher("torchrl_bamdp/envs/mujoco/base.py", "_step"),
    "belief_transform": _matcher("torchrl_bamdp/transforms/belief.py", "_step"),
    "belief_gru": _matcher("torchrl_bamdp/modules/encoder.py", "step"),
    "step_mdp": _matcher("torchrl/envs/utils.py", "__call__"),  # _StepMDP.__call__
    "get_obs": _matcher("gymnasium/envs/mujoco/half_cheetah_v5.py", "_get_obs"),
    "mj_step": lambda filename, func: "mj_step" in func and "mujoco" in func,
    "mj_rne": lambda filename, func: "mj_rnePostConstraint" in func,
    "find_spec": _matcher("<frozen importlib.util>", "find_spec"),
}


def profile_collector(config: Config, batches: int, top: int = 25) -> dict[str, Any]:
    """cProfile ``batches`` batches of (b) (after one unprofiled batch) and group the time."""
    stack = Stack.build(config)
    collector = make_collector(stack)
    it = iter(collector)
    next(it)
    profiler = cProfile.Profile()
    profiler.enable()
    frames = sum(next(it).numel() for _ in range(batches))
    profiler.disable()
    collector.shutdown()
    stack.train_env.close()

    stats = pstats.Stats(profiler)
    cumulative = dict.fromkeys(PROFILE_NODES, 0.0)
    for (filename, _, func), (_, _, tottime, cumtime, _) in stats.stats.items():
        for label, match in PROFILE_NODES.items():
            if match(filename, func):
                # builtins (mj_step) carry their time as tottime; others: outermost cumtime
                value = cumtime if cumtime > 0 else tottime
                cumulative[label] = max(cumulative[label], value)
    c = cumulative
    simulator = c["mj_step"] + c["mj_rne"] + c["get_obs"]
    # Exclusive groups (seconds); they add up to the rollout's cumulative time.
    groups = {
        "simulator (mj_step x frame_skip, _get_obs)": simulator,
        "task env Python (MujocoTaskEnv._step minus simulator)": c["task_env_step"] - simulator,
        "BAMDP bookkeeping (BAMDPEnv._step minus task env)": c["bamdp_step"] - c["task_env_step"],
        "task resets (BAMDPEnv._reset, in maybe_reset)": c["bamdp_reset"],
        "belief transform (GRU step + tensordict I/O)": c["belief_transform"],
        "policy (SamplingPolicy forward)": c["policy"],
        "TorchRL env plumbing (step/transforms/step_mdp/maybe_reset, rest)": (
            c["step_and_maybe_reset"] - c["bamdp_step"] - c["bamdp_reset"] - c["belief_transform"]
        ),
        "collector loop (carrier updates, .to(storing device), stack)": (
            c["rollout"] - c["step_and_maybe_reset"] - c["policy"]
        ),
    }
    total = c["rollout"]
    lines = []
    stats.sort_stats("tottime")
    for func in stats.fcn_list[:top]:
        _, ncalls, tottime, cumtime, _ = stats.stats[func]
        lines.append(
            {
                "function": f"{Path(func[0]).name}:{func[1]}({func[2]})",
                "ncalls": ncalls,
                "tottime_s": tottime,
                "cumtime_s": cumtime,
            }
        )
    return {
        "tool": "cProfile (inflates Python-heavy parts relative to C code)",
        "batches": batches,
        "frames": frames,
        "rollout_s": total,
        "groups_s": groups,
        "groups_fraction": {k: v / total for k, v in groups.items()} if total > 0 else {},
        "details_s": {
            "belief_gru (inside belief transform)": c["belief_gru"],
            "step_mdp (inside TorchRL plumbing)": c["step_mdp"],
            "importlib find_spec (tensordict from_any, inside policy)": c["find_spec"],
        },
        "top_tottime": lines,
    }


# -- the benchmark -----------------------------------------------------------------------------
def run_cheetah(args: argparse.Namespace) -> dict[str, dict[str, Any]]:
    n, length = args.num_envs, args.episode_length
    varibad = agent_config(FAMILY, "varibad", n, length)
    rl2 = agent_config(FAMILY, "rl2", n, length)
    variants = {
        "gym_sync_vector": gym_sync_vector(n, args.steps, varibad.seed),
        "varibad_collector": collector_variant(varibad, args.steps),
        "rl2_collector": collector_variant(rl2, args.steps),
        "bamdp_rollout": bamdp_rollout(varibad, args.steps),
    }
    if args.workers:
        with_workers = agent_config(FAMILY, "varibad", n, length, workers=args.workers)
        variants["varibad_collector_workers"] = collector_variant(with_workers, args.steps)
    if not args.no_async:
        variants["gym_async_vector"] = gym_async_vector(n, args.steps, varibad.seed)
    if args.sim_threads:
        variants.update(simulator_variants(varibad, args))
    try:
        results = measure_interleaved(variants, args.repeats)
    finally:
        for variant in variants.values():
            variant.close()
    add_ratios(results, REFERENCE)
    for name, res in results.items():
        res["description"] = DESCRIPTIONS.get(name) or ROLLOUT_THREADS_DESCRIPTION.format(
            k=args.sim_threads
        )
    return results


def simulator_variant_kinds(sim_threads: int) -> dict[str, tuple[str, int]]:
    """Variants (g) and (h) for ``--sim-threads``: name -> (kind, threads)."""
    kinds = {"varibad_collector_threads": ("threads", sim_threads)}
    kinds["varibad_collector_rollout_0"] = ("rollout", 0)
    kinds[f"varibad_collector_rollout_{sim_threads}"] = ("rollout", sim_threads)
    return kinds


def simulator_variants(config: Config, args: argparse.Namespace) -> dict[str, Variant]:
    return {
        name: collector_variant(config, args.steps, simulator)
        for name, simulator in simulator_variant_kinds(args.sim_threads).items()
    }


def run_pure_torch(args: argparse.Namespace) -> dict[str, dict[str, Any]]:
    out = {}
    for family in PURE_TORCH_FAMILIES:
        config = agent_config(family, "varibad", args.pure_torch_num_envs, None)
        variants = {
            "bamdp_rollout": bamdp_rollout(config, config.env.horizon),
            "varibad_collector": collector_variant(config, config.env.horizon),
        }
        try:
            results = measure_interleaved(variants, args.repeats)
        finally:
            for variant in variants.values():
                variant.close()
        for name, res in results.items():
            res["description"] = PURE_TORCH_DESCRIPTIONS[name]
        out[family] = {
            "num_envs": config.env.num_envs,
            "episode_length": config.env.episode_length,
            "episodes_per_task": config.env.episodes_per_task,
            "steps_per_run": config.env.horizon,
            "results": results,
            "collector_over_rollout": results["varibad_collector"]["frames_per_s"]
            / results["bamdp_rollout"]["frames_per_s"],
        }
    return out


def format_table(results: dict[str, dict[str, Any]]) -> str:
    width = max(len("variant"), *map(len, results))
    lines = [
        f"{'variant':<{width}} {'frames':>8} {'frames/s':>10} {'x (a)':>7} {'paired':>7}  "
        "description",
        "-" * (width + 86),
    ]
    for name, res in results.items():
        lines.append(
            f"{name:<{width}} {res['frames']:>8d} {res['frames_per_s']:>10,.0f} "
            f"{res['ratio_to_reference']:>7.3f} {res['paired_ratio_median']:>7.3f}  "
            f"{res['description']}"
        )
    return "\n".join(lines)


def format_pure_torch(pure: dict[str, dict[str, Any]]) -> str:
    lines = [f"{'family':<20} {'envs':>5} {'bamdp_rollout':>14} {'varibad_collector':>18} ratio"]
    for family, res in pure.items():
        rollout = res["results"]["bamdp_rollout"]["frames_per_s"]
        collector = res["results"]["varibad_collector"]["frames_per_s"]
        lines.append(
            f"{family:<20} {res['num_envs']:>5d} {rollout:>14,.0f} {collector:>18,.0f} "
            f"{res['collector_over_rollout']:>5.3f}"
        )
    return "\n".join(lines)


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--num-envs", type=int, default=16, help="cheetah_vel simulators")
    parser.add_argument(
        "--steps",
        type=int,
        default=2 * DEFAULT_EPISODE_LENGTH,
        help="env steps per timed run (collectors: whole-task batches covering them)",
    )
    parser.add_argument("--repeats", type=int, default=5, help="interleaved timed rounds")
    parser.add_argument(
        "--episode-length",
        type=int,
        default=DEFAULT_EPISODE_LENGTH,
        help=f"cheetah_vel inner episode length ({EPISODES_PER_TASK} episodes per task)",
    )
    parser.add_argument(
        "--pure-torch-num-envs",
        type=int,
        default=1024,
        help="envs for GridNavi and point_robot_sparse (0 skips them)",
    )
    parser.add_argument(
        "--profile-batches", type=int, default=1, help="batches of (b) under cProfile"
    )
    parser.add_argument("--no-profile", action="store_true", help="skip the cProfile of (b)")
    parser.add_argument("--threads", type=int, default=1, help="torch intra-op threads")
    parser.add_argument(
        "--workers",
        type=int,
        default=DEFAULT_WORKERS,
        help="simulator worker processes of variant (e) (0 skips it)",
    )
    parser.add_argument(
        "--no-async", action="store_true", help="skip (f), gymnasium's AsyncVectorEnv"
    )
    parser.add_argument(
        "--sim-threads",
        type=int,
        default=2,
        help="threads of variants (g) and (h) (0 skips them; 1 is refused: it is (b))",
    )
    parser.add_argument("--out", type=Path, default=DEFAULT_OUT, help="JSON output path")
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> dict[str, Any]:
    """Run the benchmark, print the tables, write the JSON report and return it."""
    args = parse_args(argv)
    if min(args.num_envs, args.steps, args.repeats, args.episode_length) < 1:
        raise SystemExit("--num-envs, --steps, --repeats and --episode-length must be >= 1")
    if args.workers < 0 or args.workers > args.num_envs:
        raise SystemExit("--workers must be in [0, --num-envs]")
    if args.sim_threads == 1 or not 0 <= args.sim_threads <= args.num_envs:
        raise SystemExit(
            f"--sim-threads must be 0 (skip) or in [2, --num-envs={args.num_envs}] "
            f"(got {args.sim_threads})"
        )
    if args.pure_torch_num_envs < 0 or args.profile_batches < 1:
        raise SystemExit("--pure-torch-num-envs must be >= 0 and --profile-batches >= 1")
    previous_threads = torch.get_num_threads()
    torch.set_num_threads(args.threads)
    load_start = os.getloadavg()
    varibad = agent_config(FAMILY, "varibad", args.num_envs, args.episode_length)
    horizon = varibad.env.horizon
    try:
        wall_start = time.perf_counter()
        with torch.no_grad():
            results = run_cheetah(args)
            load_after_main = os.getloadavg()
            pure = run_pure_torch(args) if args.pure_torch_num_envs else {}
            agreement = {
                name: simulator_agreement(varibad, kind, threads, args.steps)
                for name, (kind, threads) in (
                    simulator_variant_kinds(args.sim_threads) if args.sim_threads else {}
                ).items()
            }
            calls = max(10, min(args.steps, 200))
            components = component_costs(
                varibad, calls, results["varibad_collector"]["frames_per_s"]
            )
        profile = None if args.no_profile else profile_collector(varibad, args.profile_batches)
        wall = time.perf_counter() - wall_start
    finally:
        torch.set_num_threads(previous_threads)
    load_end = os.getloadavg()

    ratio = results[TARGET["variant"]]["ratio_to_reference"]
    report = {
        "benchmark": "collection_throughput",
        "config": {
            "env": FAMILY,
            "gym_id": GYM_ID,
            "num_envs": args.num_envs,
            "episode_length": args.episode_length,
            "episodes_per_task": EPISODES_PER_TASK,
            "horizon": horizon,
            "steps": args.steps,
            "collector_frames_per_batch": args.num_envs * horizon,
            "collector_batches_per_run": collector_batches(args.steps, horizon),
            "repeats": args.repeats,
            "order": "interleaved rounds (a, b, c, d, a, b, ...) after one warm-up run of each",
            "statistic": "median over rounds; paired = median of per-round ratios to (a)",
            "torch_num_threads": args.threads,
            "grad_enabled": False,
            "gym_autoreset_mode": "NEXT_STEP (gymnasium default)",
            "gym_actions": "uniform random float32 numpy (numpy.random.default_rng(seed))",
            "bamdp_actions": "uniform random (env.rand_action, action_spec.rand())",
            "agent_configs": "packaged Hydra configs (torchrl_bamdp.cli.compose_config): "
            "env=cheetah_vel algo=varibad|rl2, algo.ppo.minibatches=1",
            "pure_torch_num_envs": args.pure_torch_num_envs,
            "profile_batches": None if args.no_profile else args.profile_batches,
            "workers_of_variant_e": args.workers,
            "threads_of_variants_g_h": args.sim_threads,
        },
        "seed": varibad.seed,
        "versions": {
            "python": platform.python_version(),
            "torch": torch.__version__,
            "torchrl": torchrl.__version__,
            "tensordict": tensordict.__version__,
            "gymnasium": gymnasium.__version__,
            "mujoco": mujoco.__version__,
            "numpy": np.__version__,
        },
        "platform": {
            "system": platform.platform(),
            "machine": platform.machine(),
            "processor": platform.processor(),
            "cpu_count": os.cpu_count(),
            # 1/5/15-min load averages: other processes on a 2-core machine move absolute
            # numbers by tens of percent (the interleaved ratios much less).
            "load_average_start": list(load_start),
            "load_average_after_cheetah": list(load_after_main),
            "load_average_end": list(load_end),
        },
        "wall_clock_s": wall,
        "reference": REFERENCE,
        "results": results,
        "frames_per_s": {name: res["frames_per_s"] for name, res in results.items()},
        "ratios_to_reference": {name: res["ratio_to_reference"] for name, res in results.items()},
        "pure_torch": pure,
        "simulator_agreement": agreement,
        "components_us_per_step": components,
        "profile": profile,
        "target": {**TARGET, "measured": ratio, "met": ratio >= TARGET["ratio_to_reference"]},
    }

    print(
        f"Collection throughput, {FAMILY}: {args.num_envs} envs, BAMDP {args.episode_length} x "
        f"{EPISODES_PER_TASK}, {args.steps} steps per run, median of {args.repeats} interleaved "
        f"rounds, {args.threads} torch thread(s), torch {torch.__version__}, "
        f"torchrl {torchrl.__version__}"
    )
    print(format_table(results))
    for name, agree in agreement.items():
        print(
            f"  {name}: max |obs - loop's| {agree['max_abs_observation']:.3g} over "
            f"{agree['steps']} steps, reward {agree['max_abs_reward']:.3g}"
        )
    if pure:
        print(f"\nPure-torch families at {args.pure_torch_num_envs} envs (one BAMDP per run):")
        print(format_pure_torch(pure))
    print("\nComponents of (b), microseconds per vector step (each timed alone):")
    for name, value in components.items():
        print(f"  {name:<26} {value:>9.1f}")
    if profile is not None:
        print(f"\ncProfile of (b), {profile['frames']} frames, {profile['rollout_s']:.2f} s:")
        for name, frac in profile["groups_fraction"].items():
            print(f"  {frac:>6.1%}  {name}")
    met = report["target"]["met"]
    print(
        f"\ntarget: {TARGET['variant']} / {REFERENCE} >= {TARGET['ratio_to_reference']}: "
        f"{'MET' if met else 'NOT met'} ({ratio:.3f}); wall clock {wall:.1f} s; load average "
        f"{load_start[0]:.2f} -> {load_end[0]:.2f}"
    )
    args.out.parent.mkdir(parents=True, exist_ok=True)
    write_result_json(args.out, report)
    print(f"wrote {args.out}")
    return report


if __name__ == "__main__":
    main(sys.argv[1:])
