"""Device parity: the GridNavi stack and the VariBAD trainer on an accelerator against the CPU.

The env, the belief transform and the trainer are written as batched tensor code for any torch
device (DESIGN.md); the test suite runs on the CPU only. This script checks the rest on a
machine with a CUDA device (``--device``, default ``cuda``), against the CPU of the same machine:

1. ``env``: the same seed and actions give *identical* observations, rewards, done flags,
   inner-episode flags and tasks on both devices (GridNavi in its 4-episode BAMDP, 64 envs,
   2 tasks each), and ``check_env_specs`` passes on the device.
2. ``belief``: the same weights (a Trainer seeds them on the CPU and moves them) and the same
   actions give the same beliefs (``hyper_state``) on both devices: within 1e-5 in full fp32
   (TF32 off); the difference with the device's default TF32 settings is reported.
3. ``train``: a short default VariBAD run on each device: frames, seconds, frames/s, the final
   greedy meta-test per inner episode, and whether the ELBO ran in its own thread
   (``train.parallel_updates``). The two runs sample different actions (each device has its
   own random stream), so their returns are reported side by side, not compared.
4. ``checkpoint``: each run's checkpoint loads in a read-only Trainer on *both* devices (the
   RNG states and tensors move across) and is meta-tested there in full fp32; the returns
   are reported side by side (greedy actions of a half-trained policy can tie within the float
   differences of two devices, so they are not required to match).
5. ``throughput``: BAMDP rollout frames/s with random actions at several batch sizes, per device.

Prints a table, writes JSON (``--out``); exits 1 if a parity check fails. Run::

    .venv/bin/python benchmarks/device_parity.py --device cuda
"""

from __future__ import annotations

import argparse
import platform
import sys
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import torch
import torchrl
from torchrl.envs.utils import check_env_specs

from torchrl_bamdp.configs import load_config
from torchrl_bamdp.envs import make_env_from_config
from torchrl_bamdp.trainers import Trainer
from torchrl_bamdp.utils import write_result_json

DEFAULT_OUT = Path(__file__).resolve().parent / "results" / "device_parity.json"
STEP_KEYS = (
    ("next", "observation"),
    ("next", "reward"),
    ("next", "done"),
    ("next", "episode_done"),
    "task",
)


def synchronize(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


@contextmanager
def full_fp32() -> Iterator[None]:
    """TF32 off for cuDNN and matrix products (both default to it on some GPUs)."""
    saved = torch.backends.cudnn.allow_tf32, torch.backends.cuda.matmul.allow_tf32
    torch.backends.cudnn.allow_tf32 = torch.backends.cuda.matmul.allow_tf32 = False
    try:
        yield
    finally:
        torch.backends.cudnn.allow_tf32, torch.backends.cuda.matmul.allow_tf32 = saved


def scripted_policy(actions: torch.Tensor):
    """A policy that plays ``actions[t]`` at its t-th call, on the env's device."""
    step = {"t": 0}

    def policy(td):
        td.set("action", actions[step["t"]].to(td.device))
        step["t"] += 1
        return td

    return policy


def env_parity(device: torch.device, num_envs: int = 64, tasks: int = 2) -> dict[str, Any]:
    config = load_config({}).env
    envs = {
        name: make_env_from_config(config, seed=0, device=where, num_envs=num_envs)
        for name, where in (("cpu", torch.device("cpu")), ("device", device))
    }
    steps = envs["cpu"].horizon * tasks
    actions = torch.randint(5, (steps, num_envs), generator=torch.Generator().manual_seed(0))
    rollouts = {
        name: env.rollout(steps, scripted_policy(actions), break_when_any_done=False).to("cpu")
        for name, env in envs.items()
    }
    mismatched = [
        str(key)
        for key in STEP_KEYS
        if not torch.equal(rollouts["cpu"][key], rollouts["device"][key])
    ]
    # On a fresh env: the check's own resets draw tasks from the seeded generator.
    check_env_specs(make_env_from_config(config, seed=0, device=device, num_envs=num_envs))
    return {
        "num_envs": num_envs,
        "steps": steps,
        "check_env_specs": "passed",
        "identical": not mismatched,
        "mismatched_keys": mismatched,
        "goal_rewards": int((rollouts["cpu"]["next", "reward"] > 0).sum()),
    }


def train_config(device: torch.device, frames: int) -> Any:
    return load_config(
        {
            "device": str(device),
            "seed": 0,
            "train": {
                "total_frames": frames,
                "eval_interval": 0,
                "eval_tasks": 210,
                "progress_bar": False,
                "figures": False,
            },
        }
    )


def belief_parity(device: torch.device, workdir: Path) -> dict[str, Any]:
    """Beliefs of one batch on both devices, with the device's default float settings (cuDNN's
    recurrent layers may use TF32 on Ampere and later) and with TF32 off."""
    config = train_config(torch.device("cpu"), 3840)
    steps, num_envs = config.steps_per_batch, config.env.num_envs
    actions = torch.randint(5, (steps, num_envs), generator=torch.Generator().manual_seed(1))

    def rollout(where: torch.device):
        # A new Trainer each time: the same seeded weights and tasks.
        trainer = Trainer(train_config(where, 3840), tempfile.mkdtemp(dir=workdir))
        with torch.no_grad():
            return trainer.train_env.rollout(
                steps, scripted_policy(actions), break_when_any_done=False
            ).to("cpu")

    cpu = rollout(torch.device("cpu"))
    default = rollout(device)
    with full_fp32():
        strict = rollout(device)
    strict_difference = float((cpu["hyper_state"] - strict["hyper_state"]).abs().max())
    return {
        "steps": steps,
        "num_envs": num_envs,
        "rewards_identical": torch.equal(cpu["next", "reward"], strict["next", "reward"]),
        "hyper_state_max_abs_difference_default": float(
            (cpu["hyper_state"] - default["hyper_state"]).abs().max()
        ),
        "hyper_state_max_abs_difference_fp32": strict_difference,
        "close": strict_difference < 1e-5,
    }


def train_and_cross_evaluate(device: torch.device, frames: int, workdir: Path) -> dict[str, Any]:
    devices = {"cpu": torch.device("cpu"), "device": device}
    runs: dict[str, Any] = {}
    run_dirs = {}
    for name, where in devices.items():
        run_dirs[name] = workdir / f"run_{name}"
        trainer = Trainer(train_config(where, frames), run_dirs[name])
        synchronize(where)
        start = time.perf_counter()
        result = trainer.train()
        synchronize(where)
        seconds = time.perf_counter() - start
        runs[name] = {
            "device": str(where),
            "frames": result["frames"],
            "seconds": seconds,
            "fps": result["frames"] / seconds,
            "parallel_updates": trainer.parallel_updates,
            "meta_test_mean": result["eval"]["mean"],
        }
    # Each checkpoint evaluated read-only on both devices, in full fp32 (TF32 off): greedy
    # actions of a half-trained policy can tie to within the float differences of two devices,
    # so the returns are reported, and only loading and evaluating is required.
    checkpoint = {}
    for saved in devices:
        means = {}
        for name, where in devices.items():
            reader = Trainer(train_config(where, frames), run_dirs[saved], read_only=True)
            with full_fp32():
                means[name] = reader.evaluate().mean
        checkpoint[f"{saved}_run"] = {
            "meta_test_mean_cpu": means["cpu"],
            "meta_test_mean_device": means["device"],
            "max_abs_difference": max(
                abs(a - b) for a, b in zip(means["cpu"], means["device"], strict=True)
            ),
        }
    return {"train": runs, "checkpoint": checkpoint}


def throughput(device: torch.device, sizes: list[int], steps: int) -> list[dict[str, Any]]:
    config = load_config({}).env
    rows = []
    for num_envs in sizes:
        for name, where in (("cpu", torch.device("cpu")), ("device", device)):
            env = make_env_from_config(config, seed=0, device=where, num_envs=num_envs)
            with torch.no_grad():
                env.rollout(60, break_when_any_done=False)  # warm-up
                synchronize(where)
                start = time.perf_counter()
                env.rollout(steps, break_when_any_done=False)
                synchronize(where)
            seconds = time.perf_counter() - start
            rows.append(
                {
                    "device": name,
                    "num_envs": num_envs,
                    "frames": num_envs * steps,
                    "fps": num_envs * steps / seconds,
                }
            )
    return rows


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--device", default="cuda")
    parser.add_argument("--frames", type=int, default=96_000, help="frames of each training run")
    parser.add_argument("--sizes", type=int, nargs="+", default=[1024, 16384])
    parser.add_argument("--steps", type=int, default=600, help="rollout steps per throughput run")
    parser.add_argument("--threads", type=int, default=1, help="torch intra-op threads (CPU)")
    parser.add_argument("--out", type=Path, default=DEFAULT_OUT)
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    try:
        device = torch.device(args.device)
    except RuntimeError as err:
        parser.error(f"--device {args.device!r}: {err}")
    if device.type == "cuda" and not torch.cuda.is_available():
        parser.error("--device cuda: torch sees no CUDA device here")

    report: dict[str, Any] = {
        "device": str(device),
        "device_name": torch.cuda.get_device_name(device) if device.type == "cuda" else "cpu",
        "versions": {"torch": torch.__version__, "torchrl": torchrl.__version__},
        "python": platform.python_version(),
        "threads": args.threads,
    }
    report["env"] = env_parity(device)
    print(f"env parity: {report['env']}", flush=True)
    # The runs' directories (configs, metrics, checkpoints) are removed at the end.
    with tempfile.TemporaryDirectory() as workdir:
        report["belief"] = belief_parity(device, Path(workdir))
        print(f"belief parity: {report['belief']}", flush=True)
        report.update(train_and_cross_evaluate(device, args.frames, Path(workdir)))
    report["throughput"] = throughput(device, args.sizes, args.steps)

    header = f"{'training run':<12} {'frames':>8} {'s':>7} {'frames/s':>9}"
    print(f"\n{header}  meta-test mean (ep 1..4)")
    for run in report["train"].values():
        means = " ".join(f"{m:6.3f}" for m in run["meta_test_mean"])
        row = f"{run['device']:<12} {run['frames']:>8} {run['seconds']:7.1f} {run['fps']:9.0f}"
        print(f"{row}  {means}")
    for name, check in report["checkpoint"].items():
        for where in ("cpu", "device"):
            means = " ".join(f"{m:6.3f}" for m in check[f"meta_test_mean_{where}"])
            print(f"checkpoint of the {name} evaluated on {where}: {means}")
    print(f"\n{'rollout':<8} {'num_envs':>9} {'frames/s':>12}")
    for row in report["throughput"]:
        print(f"{row['device']:<8} {row['num_envs']:>9} {row['fps']:12.0f}")

    checks = {
        "env identical": report["env"]["identical"],
        "beliefs close": report["belief"]["close"],
        "rewards identical": report["belief"]["rewards_identical"],
    }
    report["checks"] = checks
    args.out.parent.mkdir(parents=True, exist_ok=True)
    write_result_json(args.out, report)
    failed = [name for name, ok in checks.items() if not ok]
    print(f"\nparity checks: {'all passed' if not failed else 'FAILED: ' + ', '.join(failed)}")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
