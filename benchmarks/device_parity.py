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
6. ``sync_free``: the GPU path (issue 21): GridNavi with ``preset=gpu`` (2048 envs, the env
   stepping without host syncs, actions checked for shape only), VariBAD's belief transform and
   acting policy, stepped on the device: host syncs counted by op
   (:class:`~torchrl_bamdp.host_sync.HostSyncCounter`) and by CUDA's own sync detector
   (``torch.cuda.set_sync_debug_mode("warn")``), and step frames/s with ``env.sync_free`` on and
   off.
7. ``gpu_train``: full VariBAD training frames/s with ``preset=gpu`` on the device, with the ELBO
   update in its own thread and without, against the CPU run of section 3 (its ratio).
8. ``gpu_learning``: the GridNavi learning benchmark's bar (``gridworld_learning.py``) with
   ``preset=gpu`` on the device under a wall-clock cap (``--learning-minutes``, default 2), its
   frame budget set to what section 7 measured the cap to allow.

Prints a table, writes JSON (``--out``); exits 1 if a parity check fails or the step path syncs.
Run (about 7 minutes on one H200; ``--skip parity`` or ``--skip gpu`` for one half)::

    .venv/bin/python benchmarks/device_parity.py --device cuda
"""

from __future__ import annotations

import argparse
import platform
import sys
import tempfile
import time
import warnings
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import torch
import torchrl
from torchrl.envs.utils import check_env_specs, step_mdp

from torchrl_bamdp.cli import compose_config
from torchrl_bamdp.configs import load_config
from torchrl_bamdp.envs import make_env_from_config
from torchrl_bamdp.host_sync import HostSyncCounter
from torchrl_bamdp.trainers import Trainer
from torchrl_bamdp.trainers.agents import build_agent
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


def gpu_config(device: torch.device, *overrides: str) -> Any:
    """The ``preset=gpu`` configuration on ``device`` (the CLI's composition)."""
    return compose_config(["preset=gpu", f"device={device}", *overrides])


def sync_free_step_path(device: torch.device, num_envs: int, steps: int) -> dict[str, Any]:
    """Host syncs and frames/s of the env step + belief + acting policy, sync-free and not."""
    out: dict[str, Any] = {"num_envs": num_envs, "steps": steps}
    for sync_free in (True, False):
        config = gpu_config(
            device, f"env.num_envs={num_envs}", f"env.sync_free={str(sync_free).lower()}"
        )
        base = make_env_from_config(config.env, seed=0, device=device)
        agent = build_agent(config, base).to(device)
        env, policy = agent.transformed_env(base), agent.acting_policy

        def step_loop(n: int, td, env=env, policy=policy):
            for _ in range(n):  # our loop, not rollout(): TorchRL's own done tests stay out
                td = step_mdp(env.step(policy(td)))
            return td

        with torch.no_grad():
            td = step_loop(2, env.reset())
            name = "sync_free" if sync_free else "default"
            if sync_free:
                with HostSyncCounter() as counter:
                    td = step_loop(steps, td)
                out["host_syncs"] = {
                    "ours": counter.own,
                    "with_our_code_on_the_stack": counter.inside,
                    "sites": counter.report().splitlines(),
                }
                if device.type == "cuda":
                    with warnings.catch_warnings(record=True) as caught:
                        warnings.simplefilter("always")
                        torch.cuda.set_sync_debug_mode("warn")
                        try:
                            td = step_loop(steps, td)
                        finally:
                            torch.cuda.set_sync_debug_mode("default")
                    out["cuda_sync_warnings"] = sum("synchroniz" in str(w.message) for w in caught)
            env.reset()
            td = step_loop(2, env.reset())
            synchronize(device)
            start = time.perf_counter()
            step_loop(steps, td)
            synchronize(device)
            out[f"{name}_fps"] = num_envs * steps / (time.perf_counter() - start)
    return out


def gpu_training(device: torch.device, num_envs: int, frames: int, workdir: Path) -> dict[str, Any]:
    """Frames/s of full ``preset=gpu`` training, the ELBO in its own thread and not."""
    runs = {}
    for parallel in (True, False):
        config = gpu_config(
            device,
            f"env.num_envs={num_envs}",
            f"train.total_frames={frames}",
            "train.eval_interval=0",
            "train.figures=false",
            "train.progress_bar=false",
            f"train.parallel_updates={str(parallel).lower()}",
        )
        trainer = Trainer(config, workdir / f"gpu_parallel_{parallel}")
        synchronize(device)
        start = time.perf_counter()
        result = trainer.train()
        synchronize(device)
        seconds = time.perf_counter() - start
        runs["parallel_updates" if parallel else "sequential_updates"] = {
            "num_envs": config.env.num_envs,
            "frames": result["frames"],
            "seconds": seconds,
            "fps": result["frames"] / seconds,
            "meta_test_mean": result["eval"]["mean"],
        }
    return runs


def gpu_learning(
    device: torch.device, num_envs: int, minutes: float, fps: float, workdir: Path
) -> dict:
    """The learning benchmark's bar with ``preset=gpu``, capped at ``minutes`` of training."""
    sys.path.insert(0, str(Path(__file__).resolve().parent))
    from gridworld_learning import run as learning_run

    # The schedules (entropy decay) run over train.total_frames: set it to what the cap allows.
    frames = int(fps * 60.0 * minutes * 0.9)
    args = argparse.Namespace(
        seed=0,
        frames=frames,
        eval_tasks=420,
        minutes=minutes,
        run_dir=str(workdir / "gpu_learning"),
        override=[
            "preset=gpu",
            f"device={device}",
            f"env.num_envs={num_envs}",
            "train.figures=false",
        ],
    )
    report = learning_run(args)
    return {
        key: report[key]
        for key in ("frame_budget", "frames", "wall_clock_s", "ratios", "bar_met", "varibad")
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--device", default="cuda")
    parser.add_argument("--frames", type=int, default=96_000, help="frames of each training run")
    parser.add_argument("--sizes", type=int, nargs="+", default=[1024, 16384])
    parser.add_argument("--steps", type=int, default=600, help="rollout steps per throughput run")
    parser.add_argument("--threads", type=int, default=1, help="torch intra-op threads (CPU)")
    parser.add_argument("--out", type=Path, default=DEFAULT_OUT)
    parser.add_argument("--gpu-envs", type=int, default=2048, help="num_envs of the GPU path")
    parser.add_argument(
        "--gpu-frames", type=int, default=1_228_800, help="frames of each preset=gpu speed run"
    )
    parser.add_argument("--learning-minutes", type=float, default=2.0)
    parser.add_argument(
        "--skip", nargs="*", default=[], choices=["parity", "gpu"], help="sections to skip"
    )
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
    # The runs' directories (configs, metrics, checkpoints) are removed at the end.
    with tempfile.TemporaryDirectory() as workdir:
        if "parity" not in args.skip:
            report["env"] = env_parity(device)
            print(f"env parity: {report['env']}", flush=True)
            report["belief"] = belief_parity(device, Path(workdir))
            print(f"belief parity: {report['belief']}", flush=True)
            report.update(train_and_cross_evaluate(device, args.frames, Path(workdir)))
            report["throughput"] = throughput(device, args.sizes, args.steps)
            print_parity(report)
        if "gpu" not in args.skip:
            report["sync_free"] = sync_free_step_path(device, args.gpu_envs, 59)
            print(f"sync-free step path: {report['sync_free']}", flush=True)
            report["gpu_train"] = gpu_training(
                device, args.gpu_envs, args.gpu_frames, Path(workdir)
            )
            print(f"preset=gpu training: {report['gpu_train']}", flush=True)
            best = max(run["fps"] for run in report["gpu_train"].values())
            if "train" in report:
                report["gpu_train_vs_cpu"] = best / report["train"]["cpu"]["fps"]
            write_result_json(args.out, report)  # the learning run below is the long part
            report["gpu_learning"] = gpu_learning(
                device, args.gpu_envs, args.learning_minutes, best, Path(workdir)
            )
            print_gpu(report)

    checks = {}
    if "env" in report:
        checks = {
            "env identical": report["env"]["identical"],
            "beliefs close": report["belief"]["close"],
            "rewards identical": report["belief"]["rewards_identical"],
        }
    if "sync_free" in report:
        ours = report["sync_free"]["host_syncs"]["ours"]
        checks["no host sync of ours in the step path"] = ours == 0
    report["checks"] = checks
    args.out.parent.mkdir(parents=True, exist_ok=True)
    write_result_json(args.out, report)
    failed = [name for name, ok in checks.items() if not ok]
    print(f"\nchecks: {'all passed' if not failed else 'FAILED: ' + ', '.join(failed)}")
    return 1 if failed else 0


def print_parity(report: dict[str, Any]) -> None:
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


def print_gpu(report: dict[str, Any]) -> None:
    step = report["sync_free"]
    print(
        f"\nstep path at {step['num_envs']} envs: {step['sync_free_fps']:.0f} frames/s sync-free, "
        f"{step['default_fps']:.0f} with syncs; host syncs of ours: {step['host_syncs']['ours']}"
        f", CUDA sync warnings: {step.get('cuda_sync_warnings', 'n/a')}"
    )
    for name, run in report["gpu_train"].items():
        print(f"preset=gpu training, {name}: {run['frames']} frames, {run['fps']:.0f} frames/s")
    if "gpu_train_vs_cpu" in report:
        ratio = report["gpu_train_vs_cpu"]
        print(f"best preset=gpu training / CPU training (64 envs): {ratio:.1f}x")
    learning = report["gpu_learning"]
    print(
        f"learning bar in {learning['wall_clock_s']:.0f} s ({learning['frames']:,} frames): "
        f"{learning['bar_met']}"
    )


if __name__ == "__main__":
    sys.exit(main())
