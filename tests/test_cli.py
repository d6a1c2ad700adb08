"""The console scripts, run as users run them: ``bamdp-train`` (Hydra) and ``bamdp-eval``."""

from __future__ import annotations

import csv
import hashlib
import json
import os
import shutil
import subprocess
import sys
from collections import Counter
from pathlib import Path

import pytest

from torchrl_bamdp.cli import eval_main, resolve_run
from torchrl_bamdp.configs import ConfigError

BIN = Path(sys.executable).parent
TRAIN = BIN / "bamdp-train"
EVAL = BIN / "bamdp-eval"

TINY = [
    "env.num_envs=4",
    "train.total_frames=480",
    "train.eval_tasks=21",
    "train.eval_interval=1",
    "train.checkpoint_interval=1",
    "train.progress_bar=false",
    "train.figures=false",
    "seed=0",
]


def run(script: Path, args: list[str], cwd: Path, timeout: float = 120):
    env = dict(os.environ)
    env.update(
        WANDB_MODE="offline",
        WANDB_SILENT="true",
        MPLBACKEND="Agg",
        HYDRA_FULL_ERROR="0",
        WANDB_CONFIG_DIR=str(cwd / ".wandb_config"),
        WANDB_CACHE_DIR=str(cwd / ".wandb_cache"),
    )
    env.pop("WANDB_API_KEY", None)
    return subprocess.run(
        [str(script), *args],
        cwd=cwd,
        env=env,
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )


def output(proc) -> str:
    return proc.stdout + proc.stderr


def rows(run_dir: Path) -> list[dict]:
    with (run_dir / "metrics.csv").open(newline="") as f:
        return list(csv.DictReader(f))


def digest(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    """One tiny ``bamdp-train`` run (480 frames); tests copy it before changing it."""
    cwd = tmp_path_factory.mktemp("cli_train")
    run_dir = cwd / "run"
    proc = run(TRAIN, [*TINY, f"run_dir={run_dir}"], cwd)
    return cwd, run_dir, proc


@pytest.fixture
def run_copy(trained, tmp_path):
    _, run_dir, proc = trained
    assert proc.returncode == 0, output(proc)
    copy = tmp_path / "run"
    shutil.copytree(run_dir, copy)
    return copy


def test_scripts_are_installed():
    assert TRAIN.is_file() and os.access(TRAIN, os.X_OK)
    assert EVAL.is_file() and os.access(EVAL, os.X_OK)


# -- bamdp-train -------------------------------------------------------------------------------
def test_train_writes_run_dir(trained):
    cwd, run_dir, proc = trained
    assert proc.returncode == 0, output(proc)
    assert f"run directory {run_dir}" in proc.stdout
    assert "480 frames" in proc.stdout

    assert (run_dir / "config.json").is_file()
    assert (run_dir / "metrics.csv").is_file()
    assert (run_dir / "eval.jsonl").is_file()
    assert (run_dir / "checkpoints" / "last.pt").is_file()
    assert not list(run_dir.rglob("*.tmp"))
    # Hydra leaves nothing in the working directory: no outputs/, .hydra/ or log files
    assert sorted(p.name for p in cwd.iterdir() if not p.name.startswith(".wandb")) == ["run"]
    assert not (run_dir / ".hydra").exists()

    config = json.loads((run_dir / "config.json").read_text())
    assert config["env"]["num_envs"] == 4
    assert config["train"]["total_frames"] == 480
    assert config["run_dir"] == str(run_dir)
    assert config["logger"]["backend"] == "csv"
    # values not overridden come from the YAML files
    assert config["env"]["episode_length"] == 15 and config["algo"]["name"] == "varibad"

    metrics = rows(run_dir)
    assert sorted({int(r["iteration"]) for r in metrics}) == [1, 2]
    names = {r["metric"] for r in metrics}
    for prefix in ("train/", "ppo/", "elbo/", "perf/", "eval/"):
        assert any(n.startswith(prefix) for n in names), prefix
    evals = [json.loads(x) for x in (run_dir / "eval.jsonl").read_text().splitlines()]
    assert evals[-1]["frames"] == 480 and evals[-1]["num_tasks"] == 21


def test_default_run_dir_under_runs():
    config, run_dir = resolve_run({"seed": 7, "env": {"num_envs": 4}}, ["seed=7"])
    assert run_dir.parent == Path("runs")
    assert run_dir.name.startswith("gridworld-varibad-seed7-")
    assert config.run_dir == str(run_dir)
    config, run_dir = resolve_run({"run_dir": "somewhere/else"}, [])
    assert run_dir == Path("somewhere/else") and config.run_dir == "somewhere/else"


def test_typo_override_fails_naming_the_field(tmp_path):
    proc = run(TRAIN, ["env.num_env=4", f"run_dir={tmp_path / 'run'}"], tmp_path)
    assert proc.returncode != 0
    assert "num_env" in output(proc)
    assert not (tmp_path / "run").exists()


def test_out_of_range_override_fails_naming_the_field(tmp_path):
    proc = run(TRAIN, ["algo.ppo.clip_epsilon=3", f"run_dir={tmp_path / 'run'}"], tmp_path)
    assert proc.returncode != 0
    assert "algo.ppo.clip_epsilon" in proc.stderr
    assert "Traceback" not in proc.stderr  # a clear message, not a crash
    assert not (tmp_path / "run").exists()


def test_resolve_resume_uses_the_saved_config(run_copy):
    saved = json.loads((run_copy / "config.json").read_text())
    # the composed config (YAML defaults) is ignored except for `resume`
    config, run_dir = resolve_run({"resume": str(run_copy), "env": {"num_envs": 16}}, [])
    assert run_dir == run_copy
    assert config.env.num_envs == saved["env"]["num_envs"] == 4
    assert config.train.total_frames == 480
    assert config.resume == str(run_copy) and config.run_dir == str(run_copy)


def test_resolve_resume_rejects_bad_overrides(run_copy):
    with pytest.raises(ConfigError, match="did you mean 'num_envs'"):
        resolve_run({"resume": str(run_copy)}, [f"resume={run_copy}", "env.num_env=8"])


def test_resume_of_missing_run_dir_fails(tmp_path):
    with pytest.raises(ConfigError, match="config.json"):
        resolve_run({"resume": str(tmp_path / "nope")}, [])


def test_resume_with_larger_budget_continues_the_run(run_copy, tmp_path):
    ckpt_before = digest(run_copy / "checkpoints" / "last.pt")
    proc = run(TRAIN, [f"resume={run_copy}", "train.total_frames=960"], tmp_path)
    assert proc.returncode == 0, output(proc)
    assert f"run directory {run_copy}" in proc.stdout
    assert "960 frames" in proc.stdout
    assert not (tmp_path / "runs").exists()
    assert digest(run_copy / "checkpoints" / "last.pt") != ckpt_before

    config = json.loads((run_copy / "config.json").read_text())
    assert config["train"]["total_frames"] == 960
    assert config["env"]["num_envs"] == 4  # the saved run's config is the base
    metrics = rows(run_copy)
    keys = Counter((int(r["iteration"]), r["metric"]) for r in metrics)
    assert max(keys.values()) == 1
    assert sorted({i for i, _ in keys}) == [1, 2, 3, 4]
    assert all(int(r["frames"]) == 240 * int(r["iteration"]) for r in metrics)


# -- bamdp-eval --------------------------------------------------------------------------------
def test_eval_writes_meta_test_report(run_copy, tmp_path):
    checkpoint = digest(run_copy / "checkpoints" / "last.pt")
    metrics = digest(run_copy / "metrics.csv")
    proc = run(EVAL, [f"run_dir={run_copy}", "tasks=21", "episodes=6"], tmp_path)
    assert proc.returncode == 0, output(proc)

    report = json.loads((run_copy / "meta_test.json").read_text())
    assert report["episodes"] == 6 and len(report["mean"]) == 6 and len(report["stderr"]) == 6
    assert report["num_tasks"] == 21
    assert report["frames"] == 480
    assert report["total_mean"] == pytest.approx(sum(report["mean"]), abs=1e-4)
    # GridNavi returns per 15-step episode lie in [-1.5, 15]
    assert all(-1.5 - 1e-4 <= m <= 15.0 for m in report["mean"])

    table = (run_copy / "meta_test.md").read_text().strip().splitlines()
    assert len(table) == 2 + 6
    assert table[2].startswith("| 1 |") and table[-1].startswith("| 6 |")
    assert "| 6 |" in proc.stdout
    # evaluating a run leaves its checkpoint and metrics alone
    assert digest(run_copy / "checkpoints" / "last.pt") == checkpoint
    assert digest(run_copy / "metrics.csv") == metrics


def test_eval_does_not_rewrite_the_run_config(run_copy, capsys):
    before = (run_copy / "config.json").read_text()
    eval_main([f"run_dir={run_copy}", "tasks=21", "episodes=2", "deterministic=false"])
    assert "| 2 |" in capsys.readouterr().out
    assert json.loads((run_copy / "meta_test.json").read_text())["episodes"] == 2
    assert (run_copy / "config.json").read_text() == before


def test_eval_missing_run_dir_fails_clearly(tmp_path, capsys):
    missing = tmp_path / "does_not_exist"
    with pytest.raises(SystemExit) as info:
        eval_main([f"run_dir={missing}"])
    assert info.value.code not in (0, None)
    err = capsys.readouterr().err
    assert str(missing) in err and "config.json" in err
    assert not missing.exists()


def test_eval_usage_errors(tmp_path, capsys):
    for argv in ([], [f"run_dir={tmp_path}", "taks=8"], ["tasks=21"]):
        with pytest.raises(SystemExit) as info:
            eval_main(argv)
        assert info.value.code not in (0, None)
        err = capsys.readouterr().err
        assert "usage: bamdp-eval run_dir=" in err
        if "taks=8" in argv:
            assert "taks" in err


# -- traps a new user hits (issue 18) ----------------------------------------------------------
def test_struct_key_typo_without_plus_suggests_the_key(tmp_path):
    proc = run(TRAIN, ["train.total_frame=1000", f"run_dir={tmp_path / 'run'}"], tmp_path)
    assert proc.returncode == 2
    assert "unknown key 'train.total_frame'" in proc.stderr
    assert "did you mean 'train.total_frames'?" in proc.stderr
    assert "Traceback" not in proc.stderr and "not in struct" not in proc.stderr
    assert not (tmp_path / "run").exists()


@pytest.mark.parametrize(
    ("override", "message"),
    [
        ("algo=_ppo", "'_ppo' is a partial shared by the algo configs, not one itself"),
        ("algo=varibda", "no algo config 'varibda'; did you mean algo=varibad?"),
        ("env=gridwrld", "no env config 'gridwrld'; did you mean env=gridworld?"),
        ("seed=0,1", None),
        ("hydra.job.chdir=false", None),
        ("+train.total_frame=3", None),  # left to the schema, which names the key
    ],
)
def test_check_overrides(override, message):
    from torchrl_bamdp.cli import check_overrides

    if message is None:
        check_overrides([override])
        return
    with pytest.raises(ConfigError, match=message.replace("?", r"\?")) as err:
        check_overrides([override])
    if override.startswith("algo"):
        options = str(err.value).split("choose one of")[1]
        assert "'rl2'" in options and "_ppo" not in options


def test_a_new_entry_of_env_kwargs_needs_the_plus_form():
    from torchrl_bamdp.cli import check_overrides

    with pytest.raises(ConfigError, match=r"env.kwargs has no entry 'size' yet; add it with \+"):
        check_overrides(["env=custom", "env.kwargs.size=3"])
    check_overrides(["env=custom", "+env.kwargs.size=3", "env.factory=m:f"])


def test_private_partial_is_not_an_algorithm(tmp_path):
    proc = run(TRAIN, ["algo=_ppo", *TINY, f"run_dir={tmp_path / 'run'}"], tmp_path)
    assert proc.returncode == 2
    assert "algo=_ppo" in proc.stderr and "choose one of" in proc.stderr
    assert not (tmp_path / "run").exists()


def test_rounding_to_whole_batches_is_stated(tmp_path):
    proc = run(
        TRAIN,
        [*[a for a in TINY if "total_frames" not in a], "train.total_frames=100"]
        + [f"run_dir={tmp_path / 'run'}"],
        tmp_path,
    )
    assert proc.returncode == 0, output(proc)
    assert (
        "train.total_frames=100 is not a whole number of batches of 240 frames "
        "(env.num_envs=4 x 60 steps): training 240 frames, to 240 in all"
    ) in proc.stderr
    assert "bamdp-train: 240 frames" in proc.stdout


def test_resume_with_nothing_left_to_train_says_so_and_exits_2(run_copy, tmp_path):
    before = {p.name: digest(p) for p in run_copy.rglob("*") if p.is_file()}
    for args in (
        [f"resume={run_copy}"],
        [f"resume={run_copy}", "train.total_frames=240"],
        [f"run_dir={run_copy}", *TINY],
    ):
        proc = run(TRAIN, args, tmp_path)
        assert proc.returncode == 2, output(proc)
        assert f"nothing to train: {run_copy} has trained 480 frames already" in proc.stderr
        assert "train.total_frames=960" in proc.stderr  # what to do instead
    # nothing of the run was touched: no new logger folder, config, metrics or checkpoint
    assert {p.name: digest(p) for p in run_copy.rglob("*") if p.is_file()} == before


def test_trainer_says_when_a_resume_has_nothing_to_train(run_copy, capsys):
    from torchrl_bamdp.configs.schema import read_run_config
    from torchrl_bamdp.trainers import Trainer

    result = Trainer(read_run_config(run_copy), run_copy).train()
    assert result["frames"] == 480
    assert "nothing to train" in capsys.readouterr().err


def test_resume_with_another_env_family_names_both(run_copy):
    with pytest.raises(ConfigError) as err:
        resolve_run({"resume": str(run_copy)}, [f"resume={run_copy}", "env=cheetah_dir"])
    message = str(err.value)
    assert "env 'gridworld' run" in message and "env=cheetah_dir" in message
    assert "must be a mapping" not in message
    with pytest.raises(ConfigError, match="algo 'varibad' run"):
        resolve_run({"resume": str(run_copy)}, ["algo=rl2"])
    # naming the run's own family (or its tuning) is harmless
    config, _ = resolve_run(
        {"resume": str(run_copy)}, ["env=gridworld", "algo=varibad", "tuning=gridworld"]
    )
    assert config.env.name == "gridworld"
    # logger=<option> switches the logger section to that option's config
    config, _ = resolve_run({"resume": str(run_copy)}, ["logger=wandb", "logger.project=p"])
    assert (config.logger.backend, config.logger.project) == ("wandb", "p")


def test_resume_with_another_env_family_from_the_command_line(run_copy, tmp_path):
    proc = run(TRAIN, [f"resume={run_copy}", "env=cheetah_dir"], tmp_path)
    assert proc.returncode == 2
    assert "env 'gridworld' run" in proc.stderr and "env=cheetah_dir" in proc.stderr
