"""Cost of BAMDPEnv's action check on a user's TaskEnv: ``check_actions`` full / shape / off.

A pure-torch task env (a 1D walk, the cheapest step a user can write, so the check's share is
as large as it gets) inside :class:`~torchrl_bamdp.envs.BAMDPEnv`, stepped with ``env.step``
and ``step_mdp`` as a collector does. The three settings are timed in interleaved rounds in
one process, so they share the machine's load; the report gives steps/s and the ratio to
``off`` (median over rounds). ::

    .venv/bin/python benchmarks/action_check_cost.py            # 16 and 256 envs
"""

from __future__ import annotations

import argparse
import statistics
import time
from pathlib import Path

import torch
from tensordict import TensorDictBase
from torchrl.data import Categorical, Composite, Unbounded
from torchrl.envs.utils import step_mdp

from torchrl_bamdp.envs import BAMDPEnv, TaskEnv
from torchrl_bamdp.envs.bamdp import CHECK_ACTIONS
from torchrl_bamdp.utils import PACKAGE_ROOT, write_result_json

DEFAULT_OUT = PACKAGE_ROOT / "benchmarks" / "results" / "action_check_cost.json"


class WalkEnv(TaskEnv):
    """1D walk towards a goal cell; actions 0 left, 1 stay, 2 right (no action checks)."""

    def __init__(self, num_envs: int) -> None:
        super().__init__(device="cpu", batch_size=torch.Size([num_envs]))
        shape = self.batch_size
        self._position = torch.zeros(num_envs)
        self._goal = torch.zeros(num_envs)
        flag = Categorical(2, shape=(*shape, 1), dtype=torch.bool)
        self.observation_spec = Composite(
            observation=Unbounded(shape=(*shape, 1)), task=Unbounded(shape=(*shape, 1)), shape=shape
        )
        self.action_spec = Categorical(3, shape=shape)
        self.reward_spec = Unbounded(shape=(*shape, 1))
        self.done_spec = Composite(done=flag, terminated=flag.clone(), shape=shape)

    @property
    def task_dim(self) -> int:
        return 1

    def sample_tasks(self, num: int, generator: torch.Generator | None = None) -> torch.Tensor:
        return torch.randint(-3, 4, (num, 1), generator=generator).float()

    def _reset(self, tensordict: TensorDictBase | None = None, **kwargs) -> TensorDictBase:
        mask, task = self._reset_mask_and_task(tensordict)
        mask = torch.ones(self.batch_size, dtype=torch.bool) if mask is None else mask
        self._position[mask] = 0
        if task is not None:
            self._goal[mask] = task.reshape(-1)[mask]
        done = torch.zeros(*self.batch_size, 1, dtype=torch.bool)
        return self._task_output(self._position.view(-1, 1).clone(), self._goal.view(-1, 1), done)

    def _step(self, tensordict: TensorDictBase) -> TensorDictBase:
        self._position += tensordict["action"].float() - 1
        reward = (self._position == self._goal).float().view(-1, 1)
        done = torch.zeros(*self.batch_size, 1, dtype=torch.bool)
        out = self._task_output(self._position.view(-1, 1).clone(), self._goal.view(-1, 1), done)
        out.set("reward", reward)
        return out


def steps_per_second(env: BAMDPEnv, steps: int) -> float:
    """``env.step`` + ``step_mdp`` for ``steps`` steps with random actions; steps/s (per env)."""
    td = env.reset()
    actions = torch.randint(0, 3, (steps, *env.batch_size), generator=torch.Generator())
    start = time.perf_counter()
    for t in range(steps):
        td.set("action", actions[t])
        td = step_mdp(env.step(td), keep_other=False)
    return steps / (time.perf_counter() - start)


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--num-envs", type=int, nargs="+", default=[16, 256])
    parser.add_argument("--steps", type=int, default=3000)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--out", type=Path, default=DEFAULT_OUT)
    args = parser.parse_args(argv)
    torch.set_num_threads(1)
    results = {}
    for n in args.num_envs:
        envs = {
            mode: BAMDPEnv(WalkEnv(n), episode_length=15, episodes_per_task=4, check_actions=mode)
            for mode in CHECK_ACTIONS
        }
        for env in envs.values():
            steps_per_second(env, 100)  # warm-up
        timings: dict[str, list[float]] = {mode: [] for mode in CHECK_ACTIONS}
        for _ in range(args.rounds):
            for mode, env in envs.items():
                timings[mode].append(steps_per_second(env, args.steps))
        off = statistics.median(timings["off"])
        results[str(n)] = {
            mode: {
                "steps_per_s": statistics.median(values),
                "frames_per_s": statistics.median(values) * n,
                "ratio_to_off": statistics.median(values) / off,
                "rounds": values,
            }
            for mode, values in timings.items()
        }
    report = {
        "command": " ".join(["python", "benchmarks/action_check_cost.py", *(argv or [])]),
        "date": time.strftime("%Y-%m-%d"),
        "steps": args.steps,
        "rounds": args.rounds,
        "torch_threads": 1,
        "results": results,
    }
    print("| envs | check_actions | env steps/s | frames/s | vs off |")
    print("|---|---|---|---|---|")
    for n, modes in results.items():
        for mode, r in modes.items():
            print(
                f"| {n} | {mode} | {r['steps_per_s']:.0f} | {r['frames_per_s']:.0f} | "
                f"{r['ratio_to_off']:.2f} |"
            )
    write_result_json(args.out, report)
    print(f"wrote {args.out}")
    return report


if __name__ == "__main__":
    main()
