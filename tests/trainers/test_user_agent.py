"""An algorithm that is not shipped gets everything the shipped ones get (issue 16, items 1, 5).

``tests/user_agents/gain_agent.py`` (a learned "belief" whose gain is trained by an auxiliary
loss, with buffers of its own) is trained by ``Trainer``; its transforms' parameters and buffers
and its auxiliary loss are checkpointed and restored on resume and for evaluation, and the
auxiliary terms are logged under their own names. It is selected by a registered name
(``register_algorithm``, the call the shipped algorithms use) and by import path
(``algo.builder=gain_agent:make_agent``) from ``bamdp-train``, resumed, evaluated by
``bamdp-eval`` and plotted by ``bamdp-plot``.
"""

from __future__ import annotations

import csv
import dataclasses
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from torchrl_bamdp import algorithms
from torchrl_bamdp.algorithms import (
    SHIPPED_ALGORITHMS,
    Algorithm,
    algorithm_names,
    get_algorithm,
    register_algorithm,
    unregister_algorithm,
)
from torchrl_bamdp.configs import ConfigError, load_config
from torchrl_bamdp.configs.schema import ALGO_NAMES
from torchrl_bamdp.trainers import CheckpointError, Trainer, build_agent

AGENTS = Path(__file__).resolve().parents[1] / "user_agents"
BIN = Path(sys.executable).parent
NUM_ENVS = 4
TRAIN = {
    "total_frames": 480,
    "eval_tasks": 21,
    "eval_interval": 1,
    "checkpoint_interval": 1,
    "progress_bar": False,
    "figures": False,
}


@pytest.fixture
def gain_agent(monkeypatch):
    monkeypatch.syspath_prepend(str(AGENTS))
    import gain_agent

    return gain_agent


def config(total_frames: int = 480, name: str = "oracle", **algo):
    return load_config(
        {
            "seed": 0,
            "env": {"num_envs": NUM_ENVS},
            "algo": {"name": name, "ppo": {"minibatches": 4}, "elbo": {"batch_trajectories": 8}}
            | algo,
            "train": {**TRAIN, "total_frames": total_frames},
        }
    )


def metric(run_dir: Path, name: str) -> list[float]:
    with (run_dir / "metrics.csv").open(newline="") as f:
        return [float(r["value"]) for r in csv.DictReader(f) if r["metric"] == name]


def gain_state(trainer: Trainer) -> dict[str, torch.Tensor]:
    """The user transform's state in the trainer's training env (shared module and its own)."""
    belief = trainer.train_env.transform[0]
    return {
        "gain": belief.module.gain.detach().clone(),
        "steps_seen": belief.module.steps_seen.clone(),
        "resets": belief.resets.clone(),
    }


def test_transform_state_and_aux_loss_survive_checkpoint_resume_and_evaluation(
    gain_agent, tmp_path
):
    run = tmp_path / "run"
    trainer = Trainer(config(), run, agent=gain_agent.make_agent)
    fresh = gain_state(trainer)
    trainer.train()
    trained = gain_state(trainer)
    # Trained and counted: the values differ from a fresh init ...
    assert not torch.equal(trained["gain"], fresh["gain"])
    assert trained["steps_seen"] > fresh["steps_seen"] and trained["resets"] > fresh["resets"]
    state = torch.load(run / "checkpoints" / "last.pt", weights_only=False)
    # ... and are stored once: the shared module under the auxiliary loss that holds it, not
    # again under the transforms (which keep their own buffer).
    assert sorted(state["aux_losses"]) == ["gain.module.gain", "gain.module.steps_seen"]
    assert sorted(state["transforms"]) == ["transforms.0.resets"]

    resumed = Trainer(config(total_frames=720), run, agent=gain_agent.make_agent)
    assert resumed.frames == 480
    for key, value in gain_state(resumed).items():
        assert torch.equal(value, trained[key]), key
    # The auxiliary loss trains the restored module (the one the transforms share).
    assert resumed.agent.aux_losses["gain"].module is resumed.train_env.transform[0].module
    resumed.train()
    assert not torch.equal(gain_state(resumed)["gain"], trained["gain"])

    final = gain_state(resumed)
    evaluation = Trainer(config(total_frames=720), run, read_only=True, agent=gain_agent.make_agent)
    for key, value in gain_state(evaluation).items():
        assert torch.equal(value, final[key]), key
    # A meta-test env's transforms share the restored module.
    env = evaluation._make_eval_env(21, 1)
    assert torch.equal(env.transform[0].module.gain, final["gain"])


def test_transform_state_without_aux_loss_is_checkpointed_with_the_transforms(gain_agent, tmp_path):
    trainer = Trainer(config(240), tmp_path / "run", agent=gain_agent.make_agent_without_aux)
    trainer.train()
    trained = gain_state(trainer)
    assert trained["steps_seen"] > 0
    state = torch.load(trainer.checkpoint_path, weights_only=False)
    assert state["aux_losses"] == {}
    assert sorted(state["transforms"]) == [
        "transforms.0.module.gain",
        "transforms.0.module.steps_seen",
        "transforms.0.resets",
    ]
    resumed = Trainer(config(480), tmp_path / "run", agent=gain_agent.make_agent_without_aux)
    for key, value in gain_state(resumed).items():
        assert torch.equal(value, trained[key]), key
    # A checkpoint of another agent (here with an auxiliary loss) is refused, naming the part.
    state["aux_losses"] = {"gain.module.gain": trained["gain"]}
    torch.save(state, trainer.checkpoint_path)
    with pytest.raises(CheckpointError, match=r"aux_losses: unexpected entries \['gain"):
        Trainer(config(480), tmp_path / "run", agent=gain_agent.make_agent_without_aux)


def test_an_old_checkpoint_without_the_new_entries_loads(gain_agent, tmp_path):
    trainer = Trainer(config(240), tmp_path / "run")
    trainer.train()
    state = torch.load(trainer.checkpoint_path, weights_only=False)
    del state["aux_losses"], state["transforms"]  # as written before these entries existed
    torch.save(state, trainer.checkpoint_path)
    again = Trainer(config(240), tmp_path / "run", read_only=True)
    assert again.frames == 240
    for name, value in trainer.agent.actor.state_dict().items():
        assert torch.equal(again.agent.actor.state_dict()[name], value)


def test_aux_loss_trains_its_parameter_and_is_logged_under_its_names(gain_agent, tmp_path):
    trainer = Trainer(config(), tmp_path / "run", agent=gain_agent.make_agent)
    gain = trainer.agent.aux_losses["gain"].module.gain
    before = gain.detach().clone()
    optimised = [p for g in trainer.elbo_optimizer.param_groups for p in g["params"]]
    assert len(optimised) == 1 and optimised[0] is gain  # the model step's own parameters
    trainer.train()
    assert not torch.equal(gain.detach(), before)
    run = tmp_path / "run"
    fit, norm = metric(run, "gain/loss_gain_fit"), metric(run, "gain/gain_norm")
    assert len(fit) == len(norm) == 2  # one per iteration
    assert all(v > 0 for v in fit) and norm[-1] != pytest.approx(float(before.norm()))
    assert len(metric(run, "elbo/loss")) == 2  # the step's total (no ELBO here: the aux term)
    assert metric(run, "elbo/loss") == pytest.approx(fit)
    assert metric(run, "elbo/loss_kl") == []


def test_aux_loss_beside_the_elbo_shares_its_step(gain_agent, tmp_path):
    """VariBAD plus an auxiliary loss: one optimiser step on the sum of every loss_* term."""

    def varibad_with_aux(cfg, env):
        module = gain_agent.GainModule(env.observation_spec["observation"].shape[-1])
        aux = {"gain": gain_agent.GainFit(module)}
        return dataclasses.replace(build_agent(cfg, env), aux_losses=aux)

    trainer = Trainer(config(name="varibad"), tmp_path / "run", agent=varibad_with_aux)
    elbo_params = list(trainer.agent.elbo_loss.parameters())
    optimised = [p for g in trainer.elbo_optimizer.param_groups for p in g["params"]]
    assert optimised[: len(elbo_params)] == elbo_params and len(optimised) == len(elbo_params) + 1
    trainer.train()
    run = tmp_path / "run"
    kl, fit = metric(run, "elbo/loss_kl"), metric(run, "gain/loss_gain_fit")
    reward, total = metric(run, "elbo/loss_reward"), metric(run, "elbo/loss")
    assert len(kl) == len(fit) == len(total) == 2
    for parts, whole in zip(zip(kl, reward, fit, strict=True), total, strict=True):
        assert whole == pytest.approx(sum(parts), rel=1e-5)


def test_aux_loss_names_are_checked(gain_agent):
    from torchrl_bamdp.envs import make_env

    env = make_env(num_envs=2)
    agent = gain_agent.make_agent(config(), env)
    fit = agent.aux_losses["gain"]
    with pytest.raises(ValueError, match="'elbo' is taken by the trainer's own metrics"):
        type(agent)("x", agent.actor, agent.critic, agent.make_transforms, aux_losses={"elbo": fit})
    with pytest.raises(ValueError, match="must be words"):
        type(agent)("x", agent.actor, agent.critic, agent.make_transforms, aux_losses={"a/b": fit})
    with pytest.raises(TypeError, match="must be a LossModule"):
        type(agent)("x", agent.actor, agent.critic, agent.make_transforms, aux_losses={"f": 1})


# -- the algorithm registry: by name (Python) and by import path (config, CLI) ------------------
@pytest.fixture
def registered(gain_agent):
    register_algorithm("gain_agent", gain_agent.make_agent, description="test-only")
    yield gain_agent
    unregister_algorithm("gain_agent")


def test_a_registered_algorithm_trains_by_name(registered, tmp_path):
    trainer = Trainer(config(240, name="gain_agent"), tmp_path / "run")  # no agent=: by name
    assert trainer.agent.name == "gain_agent" and "gain" in trainer.agent.aux_losses
    assert trainer.train()["frames"] == 240
    assert Trainer(config(240, name="gain_agent"), tmp_path / "run", read_only=True).frames == 240


def test_shipped_algorithms_dispatch_through_the_registry(monkeypatch):
    from torchrl_bamdp.envs import make_env

    assert set(algorithm_names()) >= set(ALGO_NAMES) == set(SHIPPED_ALGORITHMS)
    for name in SHIPPED_ALGORITHMS:
        assert get_algorithm(name).builder_path.startswith("torchrl_bamdp.trainers.agents:")
    calls, shipped = [], get_algorithm("oracle").load()

    def spy(cfg, env):
        calls.append(cfg.algo.name)
        return shipped(cfg, env)

    # build_agent finds the shipped oracle through the registry entry, not an if-chain.
    monkeypatch.setitem(algorithms._ALGORITHMS, "oracle", Algorithm("oracle", spy))
    agent = build_agent(config(name="oracle"), make_env(num_envs=2))
    assert calls == ["oracle"] and agent.name == "oracle"


def test_registering_a_taken_name_is_refused_naming_it(gain_agent):
    with pytest.raises(
        ValueError, match="algorithm 'varibad' is registered already; it is shipped"
    ):
        register_algorithm("varibad", gain_agent.make_agent)
    with pytest.raises(ValueError, match="'rl2' is registered already; it is shipped"):
        register_algorithm("rl2", gain_agent.make_agent, replace=True)  # never replaced
    register_algorithm("gain_twice", gain_agent.make_agent)
    try:
        with pytest.raises(ValueError, match="'gain_twice' is registered already; pass replace"):
            register_algorithm("gain_twice", gain_agent.make_agent)
        register_algorithm("gain_twice", gain_agent.make_agent_without_aux, replace=True)
        assert get_algorithm("gain_twice").load() is gain_agent.make_agent_without_aux
    finally:
        unregister_algorithm("gain_twice")
    with pytest.raises(ValueError, match="algorithm name must be a word"):
        register_algorithm("my agent", gain_agent.make_agent)
    with pytest.raises(ValueError, match="import path 'package.module:function'"):
        register_algorithm("mine", "gain_agent.make_agent")


def test_an_unregistered_name_names_the_registry_and_the_builder_field():
    with pytest.raises(
        ConfigError, match="config.algo.name='gain_agnt' is not a registered"
    ) as err:
        load_config({"algo": {"name": "gain_agnt"}})
    assert "algo.builder" in str(err.value) and "register_algorithm" in str(err.value)


def test_a_malformed_or_missing_builder_is_a_config_error_naming_algo_builder(gain_agent):
    def error(builder: str, name: str = "mine") -> str:
        with pytest.raises(ConfigError) as err:
            load_config({"algo": {"name": name, "builder": builder}})
        return str(err.value)

    assert error("gain_agent.make_agent") == (
        "config.algo.builder must be an import path 'package.module:function' "
        "(got 'gain_agent.make_agent')"
    )
    assert error("gain_agent:").startswith("config.algo.builder must be an import path")
    assert error("no_such_module:make_agent").startswith(
        "config.algo.builder='no_such_module:make_agent': cannot import module 'no_such_module'"
    )
    assert "config.algo.builder='gain_agent:make_agents': module 'gain_agent' has no" in error(
        "gain_agent:make_agents"
    )
    assert error("gain_agent:GAIN").endswith("is a tuple, not a callable")
    # A builder of your own needs a label of its own, not a shipped algorithm's name.
    assert "cannot label the algorithm of config.algo.builder" in error(
        "gain_agent:make_agent", name="varibad"
    )
    ok = load_config({"algo": {"name": "gain", "builder": "gain_agent:make_agent"}})
    assert ok.algo.builder == "gain_agent:make_agent"


def test_a_builder_must_return_an_agent(gain_agent, monkeypatch):
    from torchrl_bamdp.envs import make_env

    monkeypatch.setattr(gain_agent, "not_an_agent", lambda cfg, env: "agent", raising=False)
    cfg = load_config({"algo": {"name": "mine", "builder": "gain_agent:not_an_agent"}})
    with pytest.raises(TypeError, match="algo.builder='gain_agent:not_an_agent' returned a str"):
        build_agent(cfg, make_env(num_envs=2))


def run(args: list[str], cwd: Path, pythonpath: bool = True) -> subprocess.CompletedProcess:
    env = dict(os.environ)
    if pythonpath:
        env["PYTHONPATH"] = os.pathsep.join([str(AGENTS), env.get("PYTHONPATH", "")])
    env.update(WANDB_MODE="offline", WANDB_SILENT="true", MPLBACKEND="Agg")
    script, *rest = args
    return subprocess.run(
        [str(BIN / script), *rest], cwd=cwd, env=env, capture_output=True, text=True, check=False
    )


def test_cli_trains_resumes_evaluates_and_plots_an_algorithm_by_import_path(tmp_path):
    run_dir = tmp_path / "run"
    common = [
        "algo.builder=gain_agent:make_agent",
        "algo.name=gain_agent",
        "env.num_envs=4",
        "algo.ppo.minibatches=4",
        "train.eval_tasks=21",
        "train.progress_bar=false",
        "train.figures=false",
    ]
    proc = run(["bamdp-train", *common, "train.total_frames=240", f"run_dir={run_dir}"], tmp_path)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    saved = json.loads((run_dir / "config.json").read_text())
    assert saved["algo"]["builder"] == "gain_agent:make_agent"
    assert saved["algo"]["name"] == "gain_agent"
    with (run_dir / "metrics.csv").open(newline="") as f:
        logged = {r["metric"] for r in csv.DictReader(f)}
    assert {"gain/loss_gain_fit", "gain/gain_norm", "ppo/loss_objective"} <= logged
    first = torch.load(run_dir / "checkpoints" / "last.pt", weights_only=False)

    proc = run(["bamdp-train", f"resume={run_dir}", "train.total_frames=480"], tmp_path)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "480 frames" in proc.stdout
    resumed = torch.load(run_dir / "checkpoints" / "last.pt", weights_only=False)
    assert resumed["frames"] == 480
    gain = "gain.module.gain"
    assert not torch.equal(resumed["aux_losses"][gain], first["aux_losses"][gain])

    proc = run(["bamdp-eval", f"run_dir={run_dir}", "tasks=21", "episodes=2"], tmp_path)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    report = json.loads((run_dir / "meta_test.json").read_text())
    assert report["frames"] == 480 and len(report["mean"]) == 2
    proc = run(["bamdp-plot", f"run_dir={run_dir}", f"out={tmp_path / 'figs'}"], tmp_path)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert (tmp_path / "figs" / "fig4_per_episode.png").is_file()

    # Where the builder cannot be imported, the error names the field and the path.
    proc = run(["bamdp-eval", f"run_dir={run_dir}"], tmp_path, pythonpath=False)
    assert proc.returncode == 2
    assert "config.algo.builder='gain_agent:make_agent': cannot import module" in proc.stderr


def test_cli_refuses_a_malformed_builder_naming_the_field(tmp_path):
    proc = run(
        [
            "bamdp-train",
            "algo.builder=gain_agent.make_agent",
            "algo.name=mine",
            f"run_dir={tmp_path / 'run'}",
        ],
        tmp_path,
    )
    assert proc.returncode == 2
    assert "config.algo.builder must be an import path 'package.module:function'" in proc.stderr
    assert not (tmp_path / "run").exists()
