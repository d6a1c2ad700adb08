"""The validated config schema: defaults, every kind of bad input, and the shipped YAML files."""

from __future__ import annotations

import copy
import math
import sys
from pathlib import Path

import pytest
from hydra import compose, initialize_config_dir
from omegaconf import OmegaConf

from torchrl_bamdp.configs import Config, ConfigError, config_to_dict, load_config
from torchrl_bamdp.configs.schema import (
    ACTIVATIONS,
    ENV_NAMES,
    GRIDWORLD_ONLY_ALGOS,
    LOGGER_BACKENDS,
    REWARD_DECODERS,
    SWITCHING_ONLY_ALGOS,
    WANDB_MODES,
)

CONFIG_DIR = Path(__file__).resolve().parents[2] / "torchrl_bamdp" / "configs"


def nested(path: str, value) -> dict:
    """``nested("algo.ppo.lr", 1)`` -> ``{"algo": {"ppo": {"lr": 1}}}``."""
    out = value
    for part in reversed(path.split(".")):
        out = {part: out}
    return out


def merge(*dicts: dict) -> dict:
    out: dict = {}
    for d in dicts:
        _merge_into(out, d)
    return out


def _merge_into(dst: dict, src: dict) -> None:
    for key, value in src.items():
        if isinstance(value, dict) and isinstance(dst.get(key), dict):
            _merge_into(dst[key], value)
        else:
            dst[key] = copy.deepcopy(value)


def load_error(data: dict) -> str:
    with pytest.raises(ConfigError) as info:
        load_config(data)
    return str(info.value)


# -- defaults ----------------------------------------------------------------------------------
def test_defaults_load():
    for data in (None, {}):
        cfg = load_config(data)
        assert isinstance(cfg, Config)
        assert cfg == Config()
    cfg = load_config({})
    assert cfg.env.name == "gridworld"
    assert cfg.env.horizon == cfg.env.episode_length * cfg.env.episodes_per_task == 60
    assert cfg.steps_per_batch == 60
    assert cfg.frames_per_batch == cfg.env.num_envs * 60
    assert cfg.algo.ppo.encoder_grad is False


def test_values_are_applied_and_promoted():
    cfg = load_config(
        {
            "seed": 3,
            "env": {"num_envs": 8},
            "algo": {"ppo": {"lr": 1, "hidden": [16, 16]}, "elbo": {"elbo_subsample": 5}},
            "train": {"steps_per_batch": 120},
        }
    )
    assert cfg.seed == 3
    assert cfg.env.num_envs == 8
    # int -> float promotion for float fields
    assert cfg.algo.ppo.lr == 1.0 and isinstance(cfg.algo.ppo.lr, float)
    assert cfg.algo.ppo.hidden == [16, 16]
    assert cfg.algo.elbo.elbo_subsample == 5
    assert cfg.steps_per_batch == 120
    assert cfg.frames_per_batch == 8 * 120
    # untouched siblings keep their defaults
    assert cfg.env.episode_length == Config().env.episode_length


def test_config_to_dict_round_trips():
    cfg = load_config({"env": {"num_envs": 8}, "algo": {"ppo": {"minibatches": 8}}})
    data = config_to_dict(cfg)
    assert data["env"]["num_envs"] == 8
    assert load_config(data) == cfg


# -- unknown keys ------------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("data", "field", "suggestion"),
    [
        (nested("env.num_env", 4), "config.env.num_env", "num_envs"),
        (nested("algo.ppo.clip_eps", 0.1), "config.algo.ppo.clip_eps", "clip_epsilon"),
        (nested("train.total_frame", 10), "config.train.total_frame", "total_frames"),
        (nested("algo.elbo.kl_wieght", 0.1), "config.algo.elbo.kl_wieght", "kl_weight"),
        ({"sed": 1}, "config.sed", "seed"),
        (nested("logger.backnd", "csv"), "config.logger.backnd", "backend"),
    ],
)
def test_unknown_key_names_field_and_suggests(data, field, suggestion):
    msg = load_error(data)
    assert f"'{field}'" in msg
    assert f"did you mean '{suggestion}'" in msg


def test_unknown_key_without_close_match_lists_valid_keys():
    msg = load_error(nested("env.zzzzzz", 1))
    assert "config.env.zzzzzz" in msg
    assert "did you mean" not in msg
    assert "num_envs" in msg and "episode_length" in msg


# -- wrong types -------------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("path", "value", "expected"),
    [
        ("algo.ppo.lr", "0.001", "must be a number"),  # string for a float
        ("algo.ppo.gamma", "high", "must be a number"),
        ("algo.ppo.clip_epsilon", True, "must be a number"),  # bool is not a number here
        ("env.num_envs", 4.0, "must be an integer"),  # float for an int
        ("env.num_envs", True, "must be an integer"),  # bool for an int
        ("env.num_envs", "4", "must be an integer"),
        ("train.total_frames", 1.5e6, "must be an integer"),
        ("train.steps_per_batch", "abc", "must be an integer"),  # optional int
        ("algo.elbo.elbo_subsample", 2.5, "must be an integer"),
        ("train.progress_bar", 1, "must be true or false"),  # int for a bool
        ("algo.ppo.encoder_grad", "yes", "must be true or false"),
        ("env.name", 3, "must be a string"),
        ("algo.ppo.hidden", 32, "must be a list"),
        ("env", 5, "must be a mapping"),
    ],
)
def test_wrong_type_names_field(path, value, expected):
    msg = load_error(nested(path, value))
    assert f"config.{path}" in msg
    assert expected in msg


def test_wrong_type_inside_list_names_index():
    msg = load_error(nested("algo.ppo.hidden", [32, "wide"]))
    assert "config.algo.ppo.hidden[1]" in msg
    assert "must be an integer" in msg


# -- out of range ------------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("path", "value"),
    [
        ("algo.ppo.clip_epsilon", 0.0),
        ("algo.ppo.clip_epsilon", 1.5),
        ("algo.ppo.clip_epsilon", 1.0),
        ("algo.ppo.gamma", 1.2),
        ("algo.ppo.gamma", -0.1),
        ("algo.ppo.lmbda", 1.01),
        ("algo.ppo.lr", -1e-3),
        ("algo.ppo.lr", 0.0),
        ("algo.ppo.lr", math.nan),
        ("algo.ppo.epochs", 0),
        ("algo.ppo.minibatches", 0),
        ("algo.ppo.entropy_coef", -0.01),
        ("algo.ppo.max_grad_norm", 0.0),
        ("algo.ppo.hidden", [32, 0]),
        ("algo.elbo.lr", -1.0),
        ("algo.elbo.kl_weight", -0.5),
        ("algo.elbo.batch_trajectories", 0),
        ("algo.elbo.buffer_trajectories", 0),
        ("algo.elbo.updates_per_iteration", -1),
        ("algo.elbo.decode_subsample", 0),
        ("algo.elbo.max_grad_norm", -1.0),
        ("algo.encoder.latent_dim", 0),
        ("algo.encoder.reward_embed", -1),
        ("algo.decoders.reward_hidden", [0]),
        ("env.num_envs", 0),
        ("env.num_envs", -4),
        ("env.episode_length", 0),
        ("env.episodes_per_task", 0),
        ("env.grid_size", 2),
        ("train.total_frames", 0),
        ("train.steps_per_batch", 0),
        ("train.eval_interval", -1),
        ("train.eval_tasks", 0),
        ("train.eval_episodes", 0),
        ("train.checkpoint_interval", -1),
        ("train.num_threads", 0),
        ("seed", -1),
    ],
)
def test_out_of_range_names_field(path, value):
    msg = load_error(nested(path, value))
    assert f"config.{path}" in msg
    assert "must be" in msg


@pytest.mark.parametrize(
    ("path", "value"),
    [
        ("algo.ppo.gamma", 1.0),
        ("algo.ppo.gamma", 0.0),
        ("algo.ppo.clip_epsilon", 0.999),
        ("algo.elbo.kl_weight", 0.0),
        ("algo.elbo.updates_per_iteration", 0),
        ("train.eval_interval", 0),
        ("train.checkpoint_interval", 0),
        ("env.grid_size", 3),
        ("algo.encoder.action_embed", 0),
    ],
)
def test_boundary_values_are_accepted(path, value):
    cfg = load_config(nested(path, value))
    obj = cfg
    for part in path.split("."):
        obj = getattr(obj, part)
    assert obj == value


@pytest.mark.parametrize(
    "path", ["algo.elbo.kl_weight", "algo.ppo.entropy_coef", "algo.ppo.gamma", "algo.elbo.lr"]
)
def test_nan_is_rejected(path):
    msg = load_error(nested(path, math.nan))
    assert f"config.{path}" in msg


def test_device_must_be_known():
    msg = load_error({"device": "tpu"})
    assert "config.device" in msg
    assert load_config({"device": "cuda:1"}).device == "cuda:1"


def test_all_embeddings_zero_rejected():
    msg = load_error(nested("algo.encoder", {"obs_embed": 0, "action_embed": 0, "reward_embed": 0}))
    assert "config.algo.encoder" in msg


# -- choices -----------------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("path", "value", "allowed"),
    [
        ("env.name", "cheetah", ENV_NAMES),
        ("algo.name", "rl2x", ("varibad",)),
        ("algo.decoders.reward", "bce", REWARD_DECODERS),
        ("logger.backend", "tensorboard", LOGGER_BACKENDS),
        ("logger.mode", "offlne", WANDB_MODES),
        ("algo.ppo.activation", "gelu", ACTIVATIONS),
        ("env.bamdp_end", "done", ("truncated", "terminated")),
        ("algo.ppo.policy_dist", "normal", ("tanh_normal", "gaussian")),
        ("algo.ppo.advantage_norm", "epoch", ("minibatch", "batch")),
    ],
)
def test_bad_choice_lists_allowed_values(path, value, allowed):
    msg = load_error(nested(path, value))
    assert f"config.{path}" in msg
    assert repr(value) in msg
    for choice in allowed:
        assert repr(choice) in msg


def test_known_choices_sanity():
    assert set(REWARD_DECODERS) == {"auto", "grid_cells", "mse", "none"}
    assert set(LOGGER_BACKENDS) == {"csv", "wandb"}
    assert "offline" in WANDB_MODES and "online" in WANDB_MODES
    assert {"tanh", "relu"} <= set(ACTIVATIONS)


@pytest.mark.parametrize(
    ("path", "value", "phrase"),
    [
        ("algo.elbo.tbptt_steps", 0, "config.algo.elbo.tbptt_steps must be >= 1 (got 0)"),
        ("algo.elbo.precollect_frames", -1, "precollect_frames must be >= 0 (got -1)"),
        ("algo.ppo.input_embed", -16, "config.algo.ppo.input_embed must be >= 0 (got -16)"),
        ("algo.ppo.adam_eps", 0.0, "config.algo.ppo.adam_eps must be > 0 (got 0.0)"),
        ("algo.ppo.init_std", -1.0, "config.algo.ppo.init_std must be > 0 (got -1.0)"),
        ("algo.decoders.reward_obs_embed", -1, "reward_obs_embed must be >= 0 (got -1)"),
        ("algo.decoders.state_action_embed", -2, "state_action_embed must be >= 0 (got -2)"),
    ],
)
def test_bad_values_of_the_original_options_name_the_field(path, value, phrase):
    assert phrase in load_error(nested(path, value))


def test_encoder_done_input_needs_a_state_embedding():
    msg = load_error({"algo": {"encoder": {"done_input": True, "obs_embed": 0}}})
    assert "config.algo.encoder.done_input" in msg and "obs_embed > 0" in msg


# -- cross-field -------------------------------------------------------------------------------
def test_steps_per_batch_must_be_multiple_of_horizon():
    msg = load_error(nested("train.steps_per_batch", 50))
    assert "train.steps_per_batch" in msg
    assert "60" in msg  # the horizon
    # with a different horizon the same number is fine
    cfg = load_config(
        merge(
            nested("train.steps_per_batch", 50),
            {"env": {"episode_length": 25, "episodes_per_task": 2}},
        )
    )
    assert cfg.steps_per_batch == 50
    assert load_config(nested("train.steps_per_batch", 180)).steps_per_batch == 180


def test_minibatches_must_divide_batch():
    data = {"env": {"num_envs": 4}, "algo": {"ppo": {"minibatches": 7}}}  # 240 % 7 != 0
    msg = load_error(data)
    assert "algo.ppo.minibatches" in msg
    assert "240" in msg
    ok = {"env": {"num_envs": 4}, "algo": {"ppo": {"minibatches": 8}}}
    assert load_config(ok).algo.ppo.minibatches == 8


def test_encoder_grad_minibatches_must_divide_num_envs():
    # 8 divides the 240-frame batch, so it is fine without encoder_grad ...
    base = {"env": {"num_envs": 4}, "algo": {"ppo": {"minibatches": 8}}}
    load_config(base)
    # ... but with encoder_grad minibatches are whole trajectories: 8 does not divide 4 envs
    msg = load_error(merge(base, nested("algo.ppo.encoder_grad", True)))
    assert "algo.ppo.minibatches" in msg
    assert "env.num_envs" in msg
    assert "encoder_grad" in msg
    ok = {"env": {"num_envs": 4}, "algo": {"ppo": {"minibatches": 2, "encoder_grad": True}}}
    assert load_config(ok).algo.ppo.encoder_grad is True


def test_all_decoders_disabled_rejected():
    msg = load_error(nested("algo.decoders", {"reward": "none", "state": False, "task": False}))
    assert "config.algo.decoders" in msg
    assert "decoder" in msg
    # any one decoder is enough
    for extra in ({"state": True}, {"task": True}):
        cfg = load_config(nested("algo.decoders", {"reward": "none", **extra}))
        assert cfg.algo.decoders.reward == "none"


# -- the shipped YAML files --------------------------------------------------------------------
def _group_options() -> list[tuple[str, str]]:
    options = []
    for group_dir in sorted(p for p in CONFIG_DIR.iterdir() if p.is_dir()):
        for yaml in sorted(group_dir.glob("*.yaml")):
            if not yaml.stem.startswith("_"):  # partials included by the options' defaults lists
                options.append((group_dir.name, yaml.stem))
    # env/custom.yaml is the template of a task family of your own: it needs env.factory
    # (tests/trainers/test_user_task_family.py trains one through it).
    # original/ holds algo=varibad_original's per-family values, chosen by ${algo}_${env}
    # (tests/configs/test_varibad_original.py checks them), and tuning_algo/ one algorithm's
    # values on one family, chosen the same way: not options a user selects.
    return [
        o for o in options if o != ("env", "custom") and o[0] not in ("original", "tuning_algo")
    ]


#: A family without a tuning file of its own: the algorithm files' generic defaults apply as is.
GENERIC_ENV = ["env=custom", "env.factory=tests.user_families.windy_grid:make_env"]


#: The official implementation's configurations, checked value by value in their own tests.
ORIGINAL_ALGOS = ("varibad_original", "rl2_original")


def _untuned(algo: str) -> list[str]:
    """Overrides composing ``algo`` with its own file's values only: on a family without tuning,
    or, for the GridNavi-only algorithms (and rl2_original, transcribed for GridNavi only), on
    GridNavi with its tuning left out."""
    if algo in GRIDWORLD_ONLY_ALGOS or algo == "rl2_original":
        return [f"algo={algo}", "~tuning"]
    if algo in SWITCHING_ONLY_ALGOS:  # defined on a task-switching BAMDP only
        return [
            f"algo={algo}",
            *GENERIC_ENV,
            "env.switching_hazard=0.05",
            "env.episodes_per_task=1",
        ]
    return [f"algo={algo}", *GENERIC_ENV]


def test_config_dir_has_expected_groups():
    groups = {g for g, _ in _group_options()}
    assert {"env", "algo", "logger", "tuning"} <= groups
    assert (CONFIG_DIR / "config.yaml").is_file()


def _compose(overrides: list[str]) -> dict:
    with initialize_config_dir(config_dir=str(CONFIG_DIR), version_base=None):
        cfg = compose(config_name="config", overrides=overrides)
    return OmegaConf.to_container(cfg, resolve=True)


def test_top_level_yaml_composes_to_defaults():
    data = _compose([])
    assert "hydra" not in data
    cfg = load_config(data)
    # The CLI defaults (YAML) and the Python API defaults (dataclasses) agree.
    assert cfg == Config()


@pytest.mark.parametrize(("group", "option"), [g for g in _group_options() if g[0] != "tuning"])
def test_every_yaml_composes_and_validates(group, option):
    # The algorithm files' values are checked on a family without tuning (which would win), the
    # other groups' without the default algorithm's tuning on GridNavi (tuning_algo/, which wins).
    data = _compose(_untuned(option) if group == "algo" else [f"{group}={option}", "~tuning_algo"])
    cfg = load_config(data)
    yaml_values = OmegaConf.to_container(OmegaConf.load(CONFIG_DIR / group / f"{option}.yaml"))
    assert yaml_values, f"{group}/{option}.yaml is empty"
    included = yaml_values.pop("defaults", [])
    for partial in included:
        if partial != "_self_":
            partial_values = OmegaConf.load(CONFIG_DIR / group / f"{partial}.yaml")
            partial_values = OmegaConf.to_container(partial_values)
            _assert_subset(
                {k: v for k, v in partial_values.items() if k not in yaml_values},
                config_to_dict(cfg)[group],
                f"{group}/{partial}.yaml (via {option})",
            )
    # A preset is a global package: its values are set across the config's sections.
    resolved = config_to_dict(cfg) if group == "preset" else config_to_dict(cfg)[group]
    _assert_subset(yaml_values, resolved, f"{group}/{option}.yaml")


@pytest.mark.parametrize(
    "option", [o for g, o in _group_options() if g == "algo" and o not in ORIGINAL_ALGOS]
)
def test_every_algo_shares_the_ppo_settings(option):
    cfg = load_config(_compose(_untuned(option)))
    assert cfg.algo.name == option
    shared = OmegaConf.to_container(OmegaConf.load(CONFIG_DIR / "algo" / "_ppo.yaml"))["ppo"]
    overridden = {"encoder_grad"} if option == "rl2" else set()
    ppo = config_to_dict(cfg)["algo"]["ppo"]
    assert {k: v for k, v in ppo.items() if k not in overridden} == {
        k: v for k, v in shared.items() if k not in overridden
    }


def _assert_subset(expected: dict, actual: dict, where: str) -> None:
    for key, value in expected.items():
        if isinstance(value, dict):
            _assert_subset(value, actual[key], f"{where}:{key}")
        else:
            assert actual[key] == value, f"{where}:{key}"


def test_composed_overrides_are_validated():
    data = _compose(["env.num_envs=4", "algo.ppo.clip_epsilon=3"])
    msg = load_error(data)
    assert "config.algo.ppo.clip_epsilon" in msg
    data = _compose(["+env.num_env=4"])
    msg = load_error(data)
    assert "did you mean 'num_envs'" in msg


def test_stratified_eval_needs_a_multiple_of_the_goals():
    with pytest.raises(ConfigError, match="train.eval_tasks .200. must be a multiple of the 21"):
        load_config({"train": {"eval_tasks": 200}})
    assert load_config({"train": {"eval_tasks": 200, "eval_stratified": False}}).train.eval_tasks


# -- coverage of every field -------------------------------------------------------------------
def _leaf_fields(cls=Config, prefix: str = "") -> list[tuple[str, object]]:
    """``(dotted path, annotation)`` of every leaf field of the schema."""
    import dataclasses
    import typing

    out = []
    hints = typing.get_type_hints(cls)
    for f in dataclasses.fields(cls):
        tp = hints[f.name]
        if dataclasses.is_dataclass(tp):
            out += _leaf_fields(tp, f"{prefix}{f.name}.")
        else:
            out.append((f"{prefix}{f.name}", tp))
    return out


#: Fields of a task family of your own (env/custom.yaml), absent from the shipped env files.
USER_FAMILY_FIELDS = {"env.factory", "env.kwargs"}


@pytest.mark.parametrize(("path", "tp"), _leaf_fields(), ids=[p for p, _ in _leaf_fields()])
def test_every_field_is_type_checked(path, tp):
    wrong = [1, 2] if path == "env.kwargs" else {"wrong": "type"}  # env.kwargs is a mapping
    extra = {"env": {"factory": "torchrl_bamdp.envs.gridworld:GridNaviEnv"}}
    data = nested(path, wrong)
    if path == "env.kwargs":
        data["env"].update(extra["env"], name="mine")
    msg = load_error(data)
    assert f"config.{path}" in msg and "must be" in msg


def test_yaml_files_name_every_field():
    """The composed YAML (what `bamdp-train` users read and override) and the schema agree."""

    def leaves(data, prefix=""):
        out = set()
        for key, value in data.items():
            if isinstance(value, dict):
                out |= leaves(value, f"{prefix}{key}.")
            else:
                out.add(f"{prefix}{key}")
        return out

    assert leaves(_compose([])) == {p for p, _ in _leaf_fields()} - USER_FAMILY_FIELDS
    custom = _compose(["env=custom"])["env"]
    assert "factory" in custom and custom["kwargs"] == {}


@pytest.mark.parametrize(
    ("num_envs", "episode_length", "episodes_per_task", "steps_per_batch"),
    [(4, 15, 4, None), (4, 15, 4, 120), (3, 7, 2, 42), (64, 15, 4, 180), (1, 1, 1, 5)],
)
def test_batches_hold_whole_tasks(num_envs, episode_length, episodes_per_task, steps_per_batch):
    """frames_per_batch is a multiple of num_envs x horizon by construction."""
    env = {"num_envs": num_envs, "episode_length": episode_length}
    env["episodes_per_task"] = episodes_per_task
    data = {"env": env, "algo": {"ppo": {"minibatches": 1}}}
    data["train"] = {"steps_per_batch": steps_per_batch}
    cfg = load_config(data)
    horizon = episode_length * episodes_per_task
    assert cfg.frames_per_batch % (num_envs * horizon) == 0
    assert cfg.steps_per_batch % horizon == 0
    for bad in (horizon + 1, 2 * horizon - 1, max(1, horizon // 2)):
        if bad % horizon:
            data["train"] = {"steps_per_batch": bad}
            assert "must be a multiple of the BAMDP horizon" in load_error(data)


@pytest.mark.parametrize(
    ("path", "value"),
    [
        ("algo.ppo.lr", math.inf),
        ("algo.elbo.max_grad_norm", math.inf),
        ("algo.elbo.kl_weight", -math.inf),
        ("train.max_minutes", math.inf),
        ("algo.ppo.gamma", 10**400),  # an int too large for a float
    ],
)
def test_non_finite_numbers_are_rejected(path, value):
    msg = load_error(nested(path, value))
    assert f"config.{path} must be a finite number" in msg


@pytest.mark.parametrize("device", ["cudafoo", "cuda:", "cuda:x", "gpu", " cpu", "CPU", "cpu\n"])
def test_device_spelling_is_checked(device):
    assert "config.device must be 'cpu', 'mps', 'cuda' or 'cuda:<index>'" in load_error(
        {"device": device}
    )


def test_seed_fits_torch():
    assert load_config({"seed": 2**63 - 1}).seed == 2**63 - 1
    assert "config.seed must be <= 2**63 - 1" in load_error({"seed": 2**63})


def test_logger_names_are_not_empty():
    assert "config.logger.project must be a non-empty string" in load_error(
        nested("logger.project", " ")
    )
    assert "config.logger.group" in load_error(nested("logger.group", ""))


def test_auto_choices_resolve_per_env():
    grid = load_config({})
    assert grid.reward_decoder == "grid_cells" and grid.eval_stratified
    cheetah = load_config({"env": {"name": "cheetah_vel"}, "train": {"eval_tasks": 16}})
    assert cheetah.reward_decoder == "mse" and not cheetah.eval_stratified
    direction = load_config({"env": {"name": "cheetah_dir"}, "train": {"eval_tasks": 16}})
    assert direction.eval_stratified and direction.num_finite_tasks == 2


def test_stratified_evaluation_needs_a_finite_task_set():
    msg = load_error({"env": {"name": "cheetah_vel"}, "train": {"eval_stratified": True}})
    assert "train.eval_stratified" in msg and "cheetah_vel" in msg
    msg = load_error({"env": {"name": "cheetah_dir"}, "train": {"eval_tasks": 15}})
    assert "train.eval_tasks" in msg and "2" in msg


# -- per-env tuning (tuning/<env>.yaml, selected by env=) -----------------------------------------
TUNED_ENVS = sorted(o for g, o in _group_options() if g == "tuning")


def _yaml(path: Path) -> dict:
    return OmegaConf.to_container(OmegaConf.load(path))


def _tuning_values(env: str) -> dict:
    """What tuning/<env>.yaml sets, its partials first (as Hydra merges them)."""
    values = _yaml(CONFIG_DIR / "tuning" / f"{env}.yaml")
    merged = OmegaConf.create({})
    for partial in values.pop("defaults", []):
        if partial != "_self_":
            merged = OmegaConf.merge(merged, _yaml(CONFIG_DIR / "tuning" / f"{partial}.yaml"))
    return OmegaConf.to_container(OmegaConf.merge(merged, values))


def test_every_shipped_family_has_a_tuning_and_only_envs_do():
    """The algorithm files hold generic defaults; what a shipped family was tuned to is in its
    tuning file (GridNavi's too), so a family of your own gets none of it."""
    assert set(TUNED_ENVS) == set(ENV_NAMES)


def test_algorithm_specific_tuning_applies_to_that_algorithm_only():
    varibad = load_config(_compose(["algo=varibad"])).algo.encoder
    rl2 = load_config(_compose(["algo=rl2"])).algo.encoder
    assert varibad.action_embed == 0  # tuning_algo/varibad_gridworld.yaml
    assert rl2.action_embed == 8  # algo/rl2.yaml: RL2 sees its previous action
    generic = load_config(_compose(["algo=varibad", *GENERIC_ENV]))
    assert generic.algo.encoder.action_embed == 8
    assert not generic.algo.ppo.critic_task and not generic.algo.ppo.time_features
    assert generic.algo.ppo.entropy_coef_final is None
    # tuning_algo/oracle_walker_rand_params.yaml: only the oracle embeds its 65-number task.
    walker = {
        a: load_config(_compose([f"algo={a}", "env=walker_rand_params"]))
        for a in ("oracle", "varibad", "rl2")
    }
    assert walker["oracle"].algo.ppo.input_embed == 64
    assert walker["varibad"].algo.ppo.input_embed == walker["rl2"].algo.ppo.input_embed == 0
    assert load_config(_compose(["algo=oracle", "env=cheetah_vel"])).algo.ppo.input_embed == 0


@pytest.mark.parametrize("env", TUNED_ENVS)
@pytest.mark.parametrize("algo", ["varibad", "rl2", "oracle"])
def test_tuning_is_applied_for_its_env_and_validates(env, algo):
    cfg = load_config(_compose([f"env={env}", f"algo={algo}"]))
    assert cfg.env.name == env and cfg.algo.name == algo
    _assert_subset(_tuning_values(env), config_to_dict(cfg), f"tuning/{env}.yaml")
    # The algorithm's own requirements survive the env's tuning.
    assert cfg.algo.ppo.encoder_grad == (algo == "rl2")


def test_tuning_holds_the_original_cheetah_vel_settings():
    """shared/REFERENCE.md, HalfCheetahVel row, except the documented 1M-frame PPO budget."""
    algo = load_config(_compose(["env=cheetah_vel"])).algo
    assert (algo.ppo.epochs, algo.ppo.minibatches, algo.ppo.lr) == (10, 16, 3e-4)
    assert (algo.ppo.clip_epsilon, algo.ppo.gamma, algo.ppo.lmbda) == (0.1, 0.97, 0.9)
    original = load_config(_compose(["env=ant_dir"])).algo.ppo  # the shared MuJoCo partial
    assert (original.lr, original.epochs, original.minibatches) == (7e-4, 2, 1)
    assert (algo.ppo.entropy_coef, algo.ppo.hidden, algo.ppo.normalize_reward) == (
        0.01,
        [128, 128],
        True,
    )
    assert algo.ppo.entropy_coef_final is None  # constant, not VariBAD's GridNavi schedule
    enc = algo.encoder
    assert (enc.latent_dim, enc.hidden_size) == (5, 128)
    assert (enc.obs_embed, enc.action_embed, enc.reward_embed) == (32, 16, 16)
    assert (algo.decoders.reward, algo.decoders.reward_hidden) == ("mse", [64, 32])
    assert (algo.elbo.kl_weight, algo.elbo.batch_trajectories) == (0.1, 10)
    assert (algo.elbo.elbo_subsample, algo.elbo.decode_subsample) == (50, 50)


def test_command_line_beats_tuning():
    cfg = load_config(_compose(["env=cheetah_vel", "algo.ppo.lr=0.01", "train.eval_tasks=8"]))
    assert cfg.algo.ppo.lr == 0.01 and cfg.train.eval_tasks == 8
    assert cfg.algo.ppo.epochs == 10  # the rest of the tuning still applies
    assert load_config(_compose(["env=gridworld"])) == Config()


# -- env.workers (MuJoCo simulators in worker processes) ---------------------------------------
def test_env_workers_is_validated():
    mse = {"decoders": {"reward": "mse"}}
    assert load_config({}).env.workers == 0
    cfg = load_config({"env": {"name": "cheetah_vel", "num_envs": 4, "workers": 2}, "algo": mse})
    assert cfg.env.workers == 2
    assert "config.env.workers must be >= 0 (got -1)" in load_error(
        {"env": {"name": "cheetah_vel", "workers": -1}, "algo": mse}
    )
    assert "config.env.workers must be <= config.env.num_envs = 4 (got 5)" in load_error(
        {"env": {"name": "ant_dir", "num_envs": 4, "workers": 5}, "algo": mse}
    )
    for name in ("gridworld", "point_robot_sparse", "point_robot_dense"):
        msg = load_error({"env": {"name": name, "workers": 1}})
        assert f"config.env.workers is a MuJoCo option, not one of env.name={name!r}" in msg
        assert "leave it at 0 (got 1)" in msg


def test_gridnavi_defaults_anneal_entropy_and_add_time_the_other_families_do_not():
    """GridNavi (every algorithm): entropy 0.03 -> 0, time features and the privileged critic,
    the setting measured in the README; the continuous families keep the original's constant
    entropy, no time, a critic on the hyper-state only."""
    # the original's configurations (test_varibad_original.py, test_rl2_original.py)
    names = [
        o
        for g, o in _group_options()
        if g == "algo" and o not in ORIGINAL_ALGOS and o not in SWITCHING_ONLY_ALGOS
    ]
    envs = [o for g, o in _group_options() if g == "env"]
    assert names and envs
    for overrides in [[f"algo={n}"] for n in names] + [[f"env={e}"] for e in envs]:
        ppo = load_config(_compose(overrides)).algo.ppo
        gridworld = overrides[0].startswith("algo=") or overrides == ["env=gridworld"]
        if gridworld:
            assert (ppo.entropy_coef, ppo.entropy_coef_final) == (0.03, 0.0), overrides
        else:
            assert ppo.entropy_coef_final is None, overrides
        assert ppo.time_features is gridworld, overrides
        assert ppo.critic_task is gridworld, overrides


def test_policy_belief_auto_is_decoded_only_for_gridnavi_varibad():
    # (varibad_switching is defined on a switching BAMDP only: its own tests check it)
    names = [
        o
        for g, o in _group_options()
        if g == "algo" and o != "varibad_original" and o not in SWITCHING_ONLY_ALGOS
    ]
    envs = [o for g, o in _group_options() if g == "env"]
    for overrides in [[f"algo={n}"] for n in names] + [[f"env={e}"] for e in envs]:
        config = load_config(_compose(overrides))
        assert config.algo.policy_belief == "auto"
        decoded = config.algo.name == "varibad" and config.env.name == "gridworld"
        assert config.policy_belief == ("decoded" if decoded else "latent"), overrides
    latent = load_config(_compose(["algo.policy_belief=latent"]))
    assert latent.policy_belief == "latent"


def test_entropy_coef_final_is_validated():
    msg = load_error(nested("algo.ppo.entropy_coef_final", -0.1))
    assert msg == "config.algo.ppo.entropy_coef_final must be >= 0.0 (got -0.1)"


# -- ELBO semantics (algo.elbo) ---------------------------------------------------------------
@pytest.mark.parametrize(
    ("field", "value", "allowed"),
    [
        ("kl_reduction", "avg", ("mean", "sum")),
        ("task_reduction", "max", ("mean", "sum")),
        ("subsample_mode", "unbiased", ("rescaled", "original")),
        ("mse_reduction", "none", ("sum", "mean")),
        ("kl_reduction", "Mean", ("mean", "sum")),  # case matters
    ],
)
def test_bad_elbo_semantics_name_the_field_and_the_allowed_values(field, value, allowed):
    msg = load_error(nested(f"algo.elbo.{field}", value))
    assert f"config.algo.elbo.{field}" in msg
    assert repr(value) in msg
    for choice in allowed:
        assert repr(choice) in msg


def test_elbo_semantics_must_be_strings():
    msg = load_error(nested("algo.elbo.kl_reduction", 1))
    assert "config.algo.elbo.kl_reduction" in msg


def test_elbo_semantics_default_to_ours_and_accept_the_original():
    elbo = load_config({}).algo.elbo
    assert (elbo.kl_reduction, elbo.task_reduction, elbo.subsample_mode, elbo.mse_reduction) == (
        "mean",
        "mean",
        "rescaled",
        "sum",
    )
    original = {"kl_reduction": "sum", "task_reduction": "sum", "subsample_mode": "original"}
    cfg = load_config({"algo": {"elbo": {**original, "mse_reduction": "mean"}}})
    assert cfg.algo.elbo.subsample_mode == "original" and cfg.algo.elbo.mse_reduction == "mean"
    assert load_config(config_to_dict(cfg)) == cfg


def test_elbo_semantics_from_the_command_line():
    overrides = [
        "algo=varibad",
        "algo.elbo.kl_reduction=sum",
        "algo.elbo.subsample_mode=original",
        "algo.elbo.mse_reduction=mean",
    ]
    cfg = load_config(_compose(overrides))
    assert (cfg.algo.elbo.kl_reduction, cfg.algo.elbo.subsample_mode) == ("sum", "original")
    assert cfg.algo.elbo.mse_reduction == "mean"
    with pytest.raises(ConfigError, match="subsample_mode"):
        load_config(_compose(["algo=varibad", "algo.elbo.subsample_mode=with_replacement"]))


# -- train.collector (trainers/collection.py) --------------------------------------------------
def test_train_collector_defaults_to_single_in_process_collection():
    train = load_config({}).train
    assert (train.collector, train.num_collectors, train.ray_address) == ("single", 1, None)
    cfg = load_config(_compose(["train.collector=process", "train.num_collectors=4"]))
    assert (cfg.train.collector, cfg.train.num_collectors) == ("process", 4)


@pytest.mark.parametrize(
    ("train", "message"),
    [
        (
            {"collector": "foo"},
            "config.train.collector must be one of ['single', 'process', 'ray', 'process_async'] "
            "(got 'foo')",
        ),
        (
            {"collector": "process", "num_collectors": 0},
            "config.train.num_collectors must be >= 1 (got 0)",
        ),
        (
            {"num_collectors": 2},
            "config.train.num_collectors=2 needs config.train.collector='process' or 'ray'",
        ),
        (
            {"collector": "process", "num_collectors": 3},
            "train.num_collectors (3) must divide env.num_envs (64)",
        ),
        (
            {"collector": "process", "ray_address": "auto"},
            "config.train.ray_address is an option of config.train.collector='ray'",
        ),
        ({"collector": "ray", "ray_address": " "}, "config.train.ray_address must be null"),
    ],
)
def test_bad_train_collector_values_name_the_field(train, message):
    assert message in load_error({"train": train})


def test_train_collector_refuses_what_it_cannot_run():
    mujoco = {"name": "cheetah_vel", "num_envs": 4, "workers": 2}
    msg = load_error({"env": mujoco, "train": {"collector": "process", "num_collectors": 2}})
    assert "env.workers=2 steps the training process's simulators" in msg
    assert "set env.workers=0" in msg
    msg = load_error({"device": "cuda", "train": {"collector": "process"}})
    assert "config.device must be 'cpu' (got 'cuda')" in msg


def test_train_collector_ray_without_ray_installed_says_how_to_install_it(monkeypatch):
    monkeypatch.setitem(sys.modules, "ray", None)  # what an absent package looks like to find_spec
    msg = load_error({"train": {"collector": "ray", "num_collectors": 2}})
    assert "config.train.collector='ray' needs Ray, which is not installed" in msg
    assert "pip install 'torchrl_bamdp[distributed]'" in msg
    assert load_config({"train": {"collector": "process"}}).train.collector == "process"


# -- named task distributions (issue 20) --------------------------------------------------------
def test_task_distributions_default_to_the_full_one():
    env = load_config({}).env
    assert (env.train_tasks, env.test_tasks, env.split_seed) == ("all", [], 0)


def test_a_heldout_split_configures_and_counts_its_training_goals():
    config = load_config(
        {
            "env": {"train_tasks": "heldout_train", "test_tasks": ["heldout_test"]},
            "train": {"eval_tasks": 80},
        }
    )
    assert config.num_finite_tasks == 16 and config.num_tasks_of("heldout_test") == 5


@pytest.mark.parametrize(
    ("env", "field"),
    [
        ({"train_tasks": "heldout"}, "config.env.train_tasks: 'heldout'"),
        ({"test_tasks": ["region_test", "gap_test"]}, "config.env.test_tasks: 'gap_test'"),
        ({"name": "cheetah_vel", "test_tasks": ["heldout_test"]}, "env.name='cheetah_vel'"),
    ],
)
def test_an_unknown_distribution_lists_the_declared_ones(env, field):
    with pytest.raises(ConfigError, match="is not a task distribution") as err:
        load_config({"env": env})
    assert field in str(err.value) and "(declared: ['all'," in str(err.value)


def test_inconsistent_distributions_are_refused():
    with pytest.raises(ConfigError, match="test_tasks must not hold config.env.train_tasks"):
        load_config({"env": {"name": "cheetah_vel", "test_tasks": ["all"]}})
    with pytest.raises(ConfigError, match="test_tasks repeats a name"):
        load_config({"env": {"test_tasks": ["region_test", "region_test"]}})
    with pytest.raises(ConfigError, match="split_seed draws the seeded task distributions only"):
        load_config({"env": {"split_seed": 2, "test_tasks": ["region_test"]}})
    with pytest.raises(ConfigError, match="split_seed must be >= 0"):
        load_config({"env": {"split_seed": -1}})
    # Every test distribution is meta-tested on train.eval_tasks stratified tasks.
    with pytest.raises(ConfigError, match=r"multiple of the 5 tasks of env.test_tasks.*e\.g\. 80"):
        load_config(
            {
                "env": {"train_tasks": "heldout_train", "test_tasks": ["heldout_test"]},
                "train": {"eval_tasks": 32},
            }
        )


def test_distributions_from_the_command_line():
    from torchrl_bamdp.cli import compose_config

    config = compose_config(
        [
            "env=cheetah_vel",
            "env.train_tasks=gap_train",
            "env.test_tasks=[gap_test]",
        ]
    )
    assert (config.env.train_tasks, config.env.test_tasks) == ("gap_train", ["gap_test"])
