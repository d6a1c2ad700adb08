"""One source of defaults (issue 16): `load_config` composes what `bamdp-train` does."""

from __future__ import annotations

import json

import pytest

from tests.configs.resolved_configs import GOLDEN, resolve, shipped_pairs
from torchrl_bamdp.cli import compose_config
from torchrl_bamdp.configs import Config, ConfigError, config_to_dict, load_config

PAIRS = shipped_pairs()


def _python(algo: str, env: str) -> dict | str:
    try:
        return config_to_dict(load_config({"algo": {"name": algo}, "env": {"name": env}}))
    except ConfigError as err:
        return f"ConfigError: {err}"


@pytest.mark.parametrize(("algo", "env"), PAIRS, ids=[f"{a}-{e}" for a, e in PAIRS])
def test_python_equals_cli(algo, env):
    """Every algorithm x task family: the same values (or the same refusal) both ways."""
    assert _python(algo, env) == resolve(algo, env)


def test_every_pair_resolves_as_recorded():
    """Moving a default between YAML files must not change any shipped pair's values."""
    golden = json.loads(GOLDEN.read_text())
    assert set(golden) == {f"{a}/{e}" for a, e in PAIRS}
    changed = [pair for pair, value in golden.items() if resolve(*pair.split("/")) != value]
    assert not changed, (
        f"resolved configs changed for {changed}; if deliberate, rewrite the golden file "
        "with `python tests/configs/resolved_configs.py`"
    )


def test_dataclass_defaults_are_the_default_composition():
    assert config_to_dict(Config()) == config_to_dict(load_config({}))
    assert config_to_dict(Config()) == config_to_dict(compose_config([]))


def test_rl2_from_python_is_the_cli_rl2():
    """The issue's example: it needed encoder_grad by hand and then never saw the action."""
    rl2 = load_config({"algo": {"name": "rl2"}})
    assert rl2.algo.ppo.encoder_grad is True
    assert rl2.algo.encoder.action_embed == 8


def test_per_family_tuning_reaches_python():
    cheetah = load_config({"env": {"name": "cheetah_vel"}})
    assert cheetah.algo.ppo.normalize_reward is True  # tuning/_mujoco.yaml
    assert cheetah.algo.decoders.reward == "mse"
    assert cheetah.env.num_envs == compose_config(["env=cheetah_vel"]).env.num_envs


def test_mapping_wins_over_composition():
    config = load_config(
        {"env": {"name": "cheetah_vel", "num_envs": 4}, "algo": {"ppo": {"lr": 0.5}}}
    )
    assert config.env.num_envs == 4 and config.algo.ppo.lr == 0.5
    assert config.algo.ppo.epochs == compose_config(["env=cheetah_vel"]).algo.ppo.epochs


def test_own_family_starts_from_the_generic_env_defaults():
    own = load_config(
        {"env": {"name": "windy", "factory": "tests.user_families.windy_grid:make_env"}}
    )
    custom = compose_config(["env=custom", "env.factory=tests.user_families.windy_grid:make_env"])
    assert own.env.episode_length == custom.env.episode_length
    assert own.env.num_envs == custom.env.num_envs and own.env.name == "windy"


def test_unknown_names_are_still_reported_by_the_schema():
    with pytest.raises(ConfigError, match="algo.name"):
        load_config({"algo": {"name": "varibda"}})
    with pytest.raises(ConfigError, match="not a registered task family; did you mean 'gridworld'"):
        load_config({"env": {"name": "gridwrld"}})


def test_composition_inside_a_running_hydra_app_is_unaffected():
    from hydra import initialize_config_dir
    from hydra.core.global_hydra import GlobalHydra

    from torchrl_bamdp.configs.compose import CONFIG_DIR

    with initialize_config_dir(config_dir=CONFIG_DIR, version_base=None):
        before = GlobalHydra.instance().hydra
        assert load_config({"algo": {"name": "rl2"}}).algo.name == "rl2"
        assert GlobalHydra.instance().hydra is before
