"""Checkpoint reading and checking: a bad checkpoint is reported clearly, never half-loaded blindly.

A checkpoint is the dict written by :meth:`torchrl_bamdp.trainers.Trainer.state_dict`. Before any
state dict is loaded, :func:`read_checkpoint` rejects files that are not readable checkpoints
(truncated, garbage, not a dict, entries missing), and :func:`architecture_differences` compares
the configuration saved in the checkpoint with the run's own on every field that shapes a
network, an optimizer or the trajectory buffer.
"""

from __future__ import annotations

import os
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

import torch
from torch import nn

from torchrl_bamdp.configs import dotted_leaves

#: File name of a run's checkpoint, in ``<run_dir>/checkpoints/``.
CHECKPOINT_NAME = "last.pt"

#: Entries every checkpoint must hold (``health`` is optional: older checkpoints lack it).
REQUIRED_ENTRIES = (
    "config",
    "frames",
    "iteration",
    "last_eval",
    "elbo_loss",
    "actor",
    "critic",
    "ppo_optimizer",
    "elbo_optimizer",
    "buffer",
    "rng",
)

#: Entries a checkpoint may lack: ``health``, ``train_seconds`` and ``pending_reset``
#: (older checkpoints), ``encoder`` (only RL2's recurrent memory is stored outside
#: ``elbo_loss``), ``return_scaler`` (only with ``algo.ppo.normalize_reward``), and
#: ``aux_losses`` and ``transforms`` (an agent's auxiliary losses and the state of its training
#: env's transforms; checkpoints before 2026-12-02 lack them, and load without them), and
#: ``best`` (the policy ``train.keep_best`` selected: :func:`policy_state_dict`).
OPTIONAL_ENTRIES = (
    "health",
    "train_seconds",
    "pending_reset",
    "encoder",
    "return_scaler",
    "aux_losses",
    "transforms",
    "best",
)

#: Config fields (dotted paths; a section means all its fields) that must be equal between the
#: checkpoint and the run loading it: they fix parameter shapes, the functions the networks
#: compute, the optimizers' parameter groups and the stored trajectory length.
ARCHITECTURE_FIELDS = (
    "env.name",
    "env.grid_size",
    "env.episode_length",
    "env.episodes_per_task",
    # The training task distribution: a resume on another one would train a different agent
    # (and the belief oracle's prior is the training distribution's).
    "env.train_tasks",
    "env.split_seed",
    # The task-switching prior: the belief oracle's filter and varibad_switching's ELBO use it.
    "env.switching_hazard",
    # What the agent observes (frames change every network's input) and the CNN embedding them.
    "env.observation",
    "env.image_size",
    "algo.cnn",
    "algo.name",
    "algo.builder",
    "algo.encoder",
    "algo.decoders",
    "algo.ppo.hidden",
    "algo.ppo.activation",
    "algo.ppo.normalize_input",
    "algo.ppo.encoder_grad",
    "algo.ppo.time_features",
    "algo.ppo.critic_task",
    "algo.ppo.policy_dist",
    "algo.ppo.input_embed",
    "algo.ppo.done_input",
    "algo.policy_belief",
    "algo.rl2_memory",
    "algo.policy_state",
)

#: Architecture fields added after checkpoints were first written, with what the code did before
#: they existed: a checkpoint whose config lacks one was trained with that value, so it resumes
#: when the run sets it (e.g. ``algo.ppo.critic_task=false``) and is refused otherwise.
LEGACY_ARCHITECTURE_VALUES: dict[str, Any] = {
    "env.switching_hazard": 0.0,  # added with the task-switching BAMDP (issue 20, item 2)
    "algo.ppo.time_features": False,
    "algo.ppo.critic_task": False,
    "algo.policy_belief": "latent",
    # Options of the original's networks (algo=varibad_original), added on 2026-12-01.
    "algo.encoder.done_input": False,
    "algo.decoders.reward_obs_embed": 0,
    "algo.decoders.reward_action_embed": 0,
    "algo.decoders.state_obs_embed": 0,
    "algo.decoders.state_action_embed": 0,
    "algo.ppo.policy_dist": "tanh_normal",
    "algo.ppo.input_embed": 0,
    "algo.ppo.done_input": False,
    # An algorithm of your own by import path (issue 16), added on 2026-12-02.
    "algo.builder": None,
    # RL2's policy input options (algo=rl2_original), added on 2026-12-02.
    "algo.rl2_memory": "hidden",
    "algo.policy_state": True,
    # The decoders' done-flag input (the original's add_done_info), added on 2026-12-02.
    "algo.decoders.done_input": False,
    # Named task distributions (issue 20): every run before them trained on the full one.
    "env.train_tasks": "all",
    "env.split_seed": 0,
    # Image observations (issue 20, item 3): every run before them observed the state.
    "env.observation": "state",
    "env.image_size": None,
}

#: Sections that shape the networks only for runs on frames (``env.observation=pixels``): two
#: state runs are not compared on them (an older checkpoint has none).
PIXEL_ONLY_FIELDS = ("algo.cnn",)

_MISSING = object()


def _tensor_ids(modules: Iterable[nn.Module]) -> set[int]:
    return {id(t) for m in modules for t in (*m.parameters(), *m.buffers())}


def owned_state_dict(module: nn.Module, stored: Iterable[nn.Module] = ()) -> dict[str, Any]:
    """``module.state_dict()`` without the tensors that the modules ``stored`` hold.

    A checkpoint entry of the state an agent's transforms (or auxiliary losses) own: what they
    share with a part saved under its own entry (VariBAD's belief transform holds the encoder,
    saved in ``elbo_loss``) is not stored twice.

    Examples
    --------
    >>> shared = nn.Linear(2, 2)
    >>> holder = nn.ModuleDict({"shared": shared, "own": nn.Linear(2, 1)})
    >>> sorted(owned_state_dict(holder, [shared]))
    ['own.bias', 'own.weight']
    """
    seen = _tensor_ids(stored)
    return {
        key: value.detach() if isinstance(value, torch.Tensor) else value
        for key, value in module.state_dict(keep_vars=True).items()
        if not (isinstance(value, torch.Tensor) and id(value) in seen)
    }


def load_owned_state_dict(
    module: nn.Module, state: Mapping[str, Any], stored: Iterable[nn.Module] = ()
) -> None:
    """Load what :func:`owned_state_dict` saved: exactly its entries, else a ``RuntimeError``.

    Examples
    --------
    >>> shared, own = nn.Linear(2, 2), nn.Linear(2, 1)
    >>> holder = nn.ModuleDict({"shared": shared, "own": own})
    >>> saved = {k: v.clone() + 1 for k, v in owned_state_dict(holder, [shared]).items()}
    >>> load_owned_state_dict(holder, saved, [shared])
    >>> torch.equal(own.bias, saved["own.bias"])
    True
    >>> try:
    ...     load_owned_state_dict(holder, {}, [shared])
    ... except RuntimeError as err:
    ...     print(err)
    missing entries ['own.bias', 'own.weight']
    """
    expected = owned_state_dict(module, stored).keys()
    missing, unexpected = sorted(expected - state.keys()), sorted(state.keys() - expected)
    if missing or unexpected:
        what = [f"missing entries {missing}"] if missing else []
        what += [f"unexpected entries {unexpected}"] if unexpected else []
        raise RuntimeError("; ".join(what))
    # strict=False: the shared tensors, checked above to be left out on purpose.
    module.load_state_dict(dict(state), strict=False)


class CheckpointError(RuntimeError):
    """A checkpoint is corrupt, incomplete, or from a run with another architecture or env.

    The message names the checkpoint path, the run (env, algo, seed) and what failed.

    Examples
    --------
    >>> try:
    ...     raise CheckpointError("cannot load checkpoint last.pt: actor: size mismatch")
    ... except RuntimeError as err:
    ...     print(err)
    cannot load checkpoint last.pt: actor: size mismatch
    """


def describe_run(config: Mapping[str, Any] | None) -> str:
    """``"env=gridworld algo=varibad seed=0"`` of a config dict (as saved in checkpoints).

    Examples
    --------
    >>> describe_run({"seed": 3, "env": {"name": "gridworld"}, "algo": {"name": "varibad"}})
    'env=gridworld algo=varibad seed=3'
    >>> describe_run(None)
    'unknown run'
    """
    if not isinstance(config, Mapping):
        return "unknown run"
    env = config.get("env", {})
    algo = config.get("algo", {})
    env_name = env.get("name", "?") if isinstance(env, Mapping) else "?"
    algo_name = algo.get("name", "?") if isinstance(algo, Mapping) else "?"
    return f"env={env_name} algo={algo_name} seed={config.get('seed', '?')}"


def _lookup(config: Any, path: str) -> Any:
    value = config
    for part in path.split("."):
        if not isinstance(value, Mapping) or part not in value:
            return _MISSING
        value = value[part]
    return value


def _without_legacy_grid_size(config: Mapping[str, Any]) -> Mapping[str, Any]:
    """Checkpoints before 2026-12-01 hold GridNavi's grid_size 5 for every family; for the
    families that do not declare that option it meant none (``EnvConfig.grid_size`` None)."""
    env = config.get("env") if isinstance(config, Mapping) else None
    if not isinstance(env, Mapping) or env.get("grid_size") != 5 or env.get("factory"):
        return config
    from torchrl_bamdp.registry import get_task_family, task_family_names

    name = env.get("name")
    if name in task_family_names() and "grid_size" in get_task_family(name).options:
        return config
    return {**config, "env": {**env, "grid_size": None}}


def architecture_differences(
    saved: Mapping[str, Any],
    current: Mapping[str, Any],
    fields: tuple[str, ...] = ARCHITECTURE_FIELDS,
) -> list[str]:
    """The architecture-relevant fields on which two config dicts differ, one line each.

    Parameters
    ----------
    saved, current : Mapping
        Config dicts (:func:`torchrl_bamdp.configs.config_to_dict`): the checkpoint's and the run's.
    fields : tuple of str
        Dotted paths to compare; a path naming a section compares every field inside it.

    Examples
    --------
    >>> a = {"algo": {"encoder": {"latent_dim": 5}, "ppo": {"hidden": [64, 64]}}}
    >>> b = {"algo": {"encoder": {"latent_dim": 8}, "ppo": {"hidden": [64, 64]}}}
    >>> architecture_differences(a, b, ("algo.encoder", "algo.ppo.hidden"))
    ['algo.encoder.latent_dim: checkpoint 5, this run 8']

    A field an older checkpoint lacks counts as the value the code had before it existed
    (:data:`LEGACY_ARCHITECTURE_VALUES`):

    >>> new = {"algo": {"ppo": {"critic_task": True}}}
    >>> architecture_differences({"algo": {"ppo": {}}}, new, ("algo.ppo.critic_task",))
    ['algo.ppo.critic_task: checkpoint False (not recorded: older checkpoint), this run True']
    >>> new["algo"]["ppo"]["critic_task"] = False
    >>> architecture_differences({"algo": {"ppo": {}}}, new, ("algo.ppo.critic_task",))
    []

    The CNN counts only for runs on frames (:data:`PIXEL_ONLY_FIELDS`):

    >>> small, large = {"algo": {"cnn": {"features": 32}}}, {"algo": {"cnn": {"features": 64}}}
    >>> architecture_differences(small, large, ("algo.cnn",))
    []
    >>> small["env"] = large["env"] = {"observation": "pixels"}
    >>> architecture_differences(small, large, ("algo.cnn",))
    ['algo.cnn.features: checkpoint 32, this run 64']
    """
    lines = []
    saved = _without_legacy_grid_size(saved)
    on_frames = any(_lookup(c, "env.observation") == "pixels" for c in (saved, current))
    for path in fields:
        if path in PIXEL_ONLY_FIELDS and not on_frames:
            continue
        saved_value, legacy = _lookup(saved, path), ""
        if saved_value is _MISSING and path in LEGACY_ARCHITECTURE_VALUES:
            saved_value = LEGACY_ARCHITECTURE_VALUES[path]
            legacy = " (not recorded: older checkpoint)"
        old, new = dotted_leaves(saved_value, path), dotted_leaves(_lookup(current, path), path)
        for name in sorted(old.keys() | new.keys()):
            a, b = old.get(name, _MISSING), new.get(name, _MISSING)
            if a is _MISSING and name in LEGACY_ARCHITECTURE_VALUES:
                # A field added to a section later (algo.encoder.done_input, ...).
                a, legacy = LEGACY_ARCHITECTURE_VALUES[name], " (not recorded: older checkpoint)"
            if a != b:
                show = [("missing" if v is _MISSING else repr(v)) for v in (a, b)]
                lines.append(f"{name}: checkpoint {show[0]}{legacy}, this run {show[1]}")
    return lines


def read_checkpoint(
    path: str | Path, map_location: torch.device | str | None = None, run: str = "this run"
) -> dict[str, Any]:
    """Read a trainer checkpoint, raising :class:`CheckpointError` unless it is a complete one.

    Parameters
    ----------
    path : str or Path
        The checkpoint file.
    map_location : torch.device or str, optional
        Passed to ``torch.load``.
    run : str
        How the run reading it is named in error messages (e.g. :func:`describe_run`).

    Returns
    -------
    dict
        The checkpoint, with every entry of :data:`REQUIRED_ENTRIES`.

    Examples
    --------
    >>> import tempfile
    >>> bad = Path(tempfile.mkdtemp()) / "last.pt"
    >>> _ = bad.write_bytes(b"not a checkpoint")
    >>> try:
    ...     read_checkpoint(bad)
    ... except CheckpointError as err:
    ...     print("corrupt or truncated" in str(err))
    True
    """
    head = f"cannot read checkpoint {path} into {run}"
    try:
        # weights_only=False: the checkpoint holds TensorDicts (the trajectory buffer) and RNG
        # states; only load checkpoints you wrote yourself.
        state = torch.load(path, map_location=map_location, weights_only=False)
    except FileNotFoundError:
        raise
    except Exception as err:  # torch raises many kinds for corrupt files; report them all
        raise CheckpointError(
            f"{head}: the file is corrupt or truncated ({type(err).__name__}: {_short(str(err))})"
        ) from err
    if not isinstance(state, dict):
        raise CheckpointError(
            f"{head}: it holds a {type(state).__name__}, not a checkpoint dict of "
            f"{', '.join(REQUIRED_ENTRIES)}"
        )
    missing = [name for name in REQUIRED_ENTRIES if name not in state]
    if missing:
        raise CheckpointError(f"{head}: entries missing: {', '.join(missing)}")
    if not isinstance(state["config"], Mapping):
        raise CheckpointError(
            f"{head}: its 'config' entry is a {type(state['config']).__name__}, not a dict"
        )
    return state


class NothingToTrainError(CheckpointError):
    """A run asked to train holds a checkpoint that already reached ``train.total_frames``.

    Raised by ``Trainer(..., refuse_finished=True)`` (``bamdp-train`` asks for it) after the
    checkpoint was checked and before any file of the run is written.

    Examples
    --------
    >>> issubclass(NothingToTrainError, CheckpointError)
    True
    """


def _short(message: str, limit: int = 600) -> str:
    """One line of at most ``limit`` characters of a (possibly multi-line) torch message."""
    text = " ".join(line.strip() for line in message.strip().splitlines() if line.strip())
    return text if len(text) <= limit else text[: limit - 3] + "..."


def short_error(err: BaseException, limit: int = 600) -> str:
    """A one-line summary of an exception raised while loading a state dict.

    Examples
    --------
    >>> short_error(RuntimeError("Error(s) in loading state_dict for Linear:\\n\\tsize mismatch"))
    'Error(s) in loading state_dict for Linear: size mismatch'
    """
    return _short(str(err), limit)


# -- a Trainer's state: what its checkpoint holds, written and restored ----------------------
def decoded_belief_of(train_env: Any) -> Any:
    """The training env's :class:`~torchrl_bamdp.transforms.belief.DecodedBelief`, if any."""
    from torchrl.envs import Compose

    from torchrl_bamdp.transforms.belief import DecodedBelief

    transforms = train_env.transform
    steps = list(transforms) if isinstance(transforms, Compose) else [transforms]
    return next((t for t in steps if isinstance(t, DecodedBelief)), None)


def _stateful_parts(trainer: Any) -> dict[str, Any]:
    modules = trainer.agent.modules()
    parts = {
        "elbo_loss": modules.get("elbo_loss"),
        "actor": modules.get("actor"),
        "critic": modules.get("critic"),
        "ppo_optimizer": trainer.ppo_optimizer,
        "elbo_optimizer": trainer.elbo_optimizer,
    }
    if "encoder" in modules:  # RL2's memory (VariBAD's encoder lives in elbo_loss)
        parts["encoder"] = modules["encoder"]
    if trainer.return_scaler is not None:
        parts["return_scaler"] = trainer.return_scaler
    return parts


def _owned_parts(trainer: Any) -> dict[str, tuple[nn.Module | None, list[nn.Module]]]:
    """The agent's parts that may share tensors with the others: its auxiliary losses and its
    training env's transforms, each with the modules whose tensors they leave out (saved under
    those modules' own entries)."""
    modules = trainer.agent.modules()
    aux = modules.pop("aux_losses", None)
    return {
        "aux_losses": (aux, list(modules.values())),
        "transforms": (trainer.train_env.transform, [*modules.values(), *([aux] if aux else [])]),
    }


def policy_state_dict(trainer: Any) -> dict[str, Any]:
    """A copy of everything that decides how the trainer's agent acts: its networks (actor,
    critic, belief model, RL2's memory), auxiliary losses and training env's transforms; not
    its optimisers, buffer or random streams. What ``train.keep_best`` keeps of the best policy.

    Examples
    --------
    >>> import tempfile
    >>> from torchrl_bamdp.configs import load_config
    >>> from torchrl_bamdp.trainers import Trainer
    >>> config = load_config({"env": {"num_envs": 4}, "train": {"progress_bar": False}})
    >>> trainer = Trainer(config, tempfile.mkdtemp())
    >>> snapshot = policy_state_dict(trainer)
    >>> sorted(snapshot)
    ['actor', 'aux_losses', 'critic', 'elbo_loss', 'transforms']
    >>> load_policy_state(trainer, snapshot)  # back to the same weights
    """
    parts = {
        part: module.state_dict()
        for part, module in _stateful_parts(trainer).items()
        if module is not None
        and not isinstance(module, torch.optim.Optimizer)
        and part != "return_scaler"  # scales training rewards only; acting never reads it
    }
    parts.update(
        (part, owned_state_dict(module, stored) if module is not None else {})
        for part, (module, stored) in _owned_parts(trainer).items()
    )
    # state_dict() holds the live tensors: the snapshot must not follow later updates.
    return {
        part: {
            key: value.detach().clone() if torch.is_tensor(value) else value
            for key, value in state.items()
        }
        for part, state in parts.items()
    }


def load_policy_state(trainer: Any, snapshot: Mapping[str, Any]) -> None:
    """Load a :func:`policy_state_dict` snapshot into the trainer's agent (in place)."""
    stateful = _stateful_parts(trainer)
    for part, (module, stored) in _owned_parts(trainer).items():
        if module is not None and part in snapshot:
            load_owned_state_dict(module, snapshot[part], stored)
    for part, state in snapshot.items():
        if part in stateful and stateful[part] is not None:
            stateful[part].load_state_dict(state)


def trainer_state_dict(trainer: Any) -> dict[str, Any]:
    """Everything a :class:`~torchrl_bamdp.trainers.Trainer` needs to continue exactly: config,
    counters, every module and optimiser of its agent (transforms and auxiliary losses
    included), the trajectory buffer, health counters and every random stream."""
    from torchrl_bamdp.configs.schema import config_to_dict

    decoded = decoded_belief_of(trainer.train_env)
    return {
        "config": config_to_dict(trainer.config),
        "frames": trainer.frames,
        "iteration": trainer.iteration,
        "train_seconds": trainer.train_seconds,
        "last_eval": trainer.last_eval,
        # Parts an algorithm does not have are stored empty (every checkpoint has every entry).
        **{
            part: module.state_dict() if module is not None else {}
            for part, module in _stateful_parts(trainer).items()
        },
        **{
            part: owned_state_dict(module, stored) if module is not None else {}
            for part, (module, stored) in _owned_parts(trainer).items()
        },
        "buffer": trainer.buffer.state_dict(),
        "health": trainer.health.state_dict(),
        # train.keep_best: the best validated policy so far (with its frames and score).
        "best": trainer.best,
        "rng": {
            "torch": torch.get_rng_state(),
            # Whole-task batches: the collector's next reset redraws these tasks on resume.
            "task_generator": trainer.env.generator_state_before_last_reset,
            "buffer_generator": trainer.buffer.generator.get_state(),
            "elbo_generator": trainer.elbo_generator.get_state(),
        },
        # What the collector's last reset decoded (VariBAD with algo.policy_belief decoded),
        # written again by the resumed run's first reset: see DecodedBelief.
        "pending_reset": {"decoded_belief": getattr(decoded, "last_reset", None)},
    }


def save_trainer_checkpoint(trainer: Any) -> Path:
    """Write the trainer's checkpoint atomically (temp file + rename); returns its path."""
    path = trainer.checkpoint_path
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".tmp")
    torch.save(trainer_state_dict(trainer), tmp)
    os.replace(tmp, path)
    return path


def load_trainer_checkpoint(trainer: Any, path: str | Path) -> None:
    """Restore a trainer from the checkpoint at ``path``, checking it first (see
    :meth:`torchrl_bamdp.trainers.Trainer.load_checkpoint`)."""
    from torchrl_bamdp.configs.schema import config_to_dict

    current = config_to_dict(trainer.config)
    run = f"run {describe_run(current)} ({trainer.run_dir})"
    state = read_checkpoint(path, map_location=trainer.device, run=run)
    saved = state["config"]
    differences = architecture_differences(saved, current, ARCHITECTURE_FIELDS)
    if differences:
        raise CheckpointError(
            f"checkpoint {path} was written by a run with a different architecture or env "
            f"(checkpoint: {describe_run(saved)}; this {run}): {'; '.join(differences)}. "
            "Resume with the checkpoint's settings or start a new run_dir."
        )

    def load(part: str, restore) -> None:
        try:
            restore()
        except Exception as err:  # size mismatches, missing keys, wrong types
            raise CheckpointError(
                f"cannot load checkpoint {path} (written by {describe_run(saved)}) into this "
                f"{run}: {part}: {short_error(err)}"
            ) from err

    def scalars() -> None:
        trainer.frames = int(state["frames"])
        trainer.iteration = int(state["iteration"])
        trainer.train_seconds = float(state.get("train_seconds", 0.0))
        if state["last_eval"] is not None and not isinstance(state["last_eval"], dict):
            raise TypeError(f"last_eval is a {type(state['last_eval']).__name__}, not a dict")
        trainer.last_eval = state["last_eval"]
        best = state.get("best")
        if best is not None and not isinstance(best, dict):
            raise TypeError(f"best is a {type(best).__name__}, not a dict")
        trainer.best = best

    def rng() -> None:
        # The states of CPU generators, which map_location moved to this run's device: a run
        # trained on a GPU resumes (or is evaluated) on the CPU and the other way round.
        saved = {name: value.cpu() for name, value in state["rng"].items()}
        torch.set_rng_state(saved["torch"])
        trainer.env.task_generator.set_state(saved["task_generator"])
        trainer.buffer.generator.set_state(saved["buffer_generator"])
        if "elbo_generator" in saved:  # absent from checkpoints before 2026-11-26
            trainer.elbo_generator.set_state(saved["elbo_generator"])

    load("frames/iteration", scalars)
    for part, module in _stateful_parts(trainer).items():
        if part == "return_scaler" and part not in state:
            continue  # normalize_reward turned on at a resume: the statistics start afresh
        if module is not None:
            load(part, lambda module=module, part=part: module.load_state_dict(state[part]))
    for part, (module, stored) in _owned_parts(trainer).items():
        if part not in state:
            # Older checkpoints (shipped agents only: nothing of theirs lives only there).
            continue
        load(
            part,
            lambda m=module, part=part, stored=stored: load_owned_state_dict(
                m if m is not None else nn.Module(), state[part], stored
            ),
        )
    load("buffer", lambda: trainer.buffer.load_state_dict(state["buffer"]))
    load("health", lambda: trainer.health.load_state_dict(state.get("health", {})))
    load("rng", rng)

    def pending_reset() -> None:
        decoded = state.get("pending_reset", {}).get("decoded_belief")
        belief = decoded_belief_of(trainer.train_env)
        if belief is not None and decoded is not None:
            belief.replay_next_reset = decoded

    load("pending_reset", pending_reset)
