"""Training wiring in one readable place: collector + PPO (+ ELBO) + logging + checkpoints.

The algorithm (VariBAD, RL2, oracle, belief oracle, or a fixed reference policy) is the
:class:`~torchrl_bamdp.trainers.agents.Agent` built from ``config.algo``; this loop is the same
for all of them.
"""

from __future__ import annotations

import functools
import json
import math
import sys
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor, wait
from pathlib import Path
from typing import Any

import torch
from tensordict import TensorDictBase
from torch import nn
from torchrl.envs import TransformedEnv
from torchrl.objectives.value import GAE

from torchrl_bamdp.configs.schema import Config, config_to_dict
from torchrl_bamdp.data import TrajectoryBuffer
from torchrl_bamdp.envs import make_env_from_config
from torchrl_bamdp.evaluation.meta_test import (
    MetaTestResult,
    completed_episode_returns,
    meta_test,
)
from torchrl_bamdp.modules.actor_critic import (
    SamplingPolicy,
    add_log_probs,
    find_input_normalizers,
    unique_parameters,
)
from torchrl_bamdp.objectives.advantage import normalize_advantage
from torchrl_bamdp.objectives.ppo import TensorClipPPOLoss
from torchrl_bamdp.objectives.reward_scaling import ReturnScaler
from torchrl_bamdp.trainers.agents import Agent, build_agent
from torchrl_bamdp.trainers.callbacks import ProgressBar, write_run_figures
from torchrl_bamdp.trainers.checkpoint import (
    CHECKPOINT_NAME,
    NothingToTrainError,
    load_policy_state,
    load_trainer_checkpoint,
    policy_state_dict,
    save_trainer_checkpoint,
    trainer_state_dict,
)
from torchrl_bamdp.trainers.collection import TrainCollector
from torchrl_bamdp.trainers.health import (
    HealthMonitor,
    format_terms,
    nonfinite_entries,
    nonfinite_terms,
)
from torchrl_bamdp.trainers.logging import MetricsLogger
from torchrl_bamdp.trainers.schedules import Schedules
from torchrl_bamdp.utils import atomic_write_text


@functools.cache
def process_git_commit() -> str | None:
    """The git commit of the checkout this process's code was loaded from, read once.

    Read on the first call and kept: a ``git pull`` in the same checkout while a long run goes
    on changes the files on disk, not the code the process already runs, so a record written
    at the end must not report the new HEAD. (The first call comes early in every trainer
    process: a run's ``run_info.json`` is written when its ``Trainer`` starts.)

    Examples
    --------
    >>> process_git_commit() is process_git_commit()
    True
    """
    import subprocess

    try:
        return (
            subprocess.run(
                ["git", "rev-parse", "HEAD"],
                cwd=Path(__file__).resolve().parent,
                capture_output=True,
                text=True,
                timeout=5,
            ).stdout.strip()
            or None
        )
    except (OSError, subprocess.SubprocessError):
        return None


def environment_info(seed: int) -> dict[str, Any]:
    """Versions, git commit, command line and time of this process (for ``run_info.json``).

    Examples
    --------
    >>> sorted(environment_info(0))[:3]
    ['argv', 'git_commit', 'platform']
    """
    import platform

    import tensordict
    import torchrl

    return {
        "argv": sys.argv,
        "git_commit": process_git_commit(),
        "platform": platform.platform(),
        "python": platform.python_version(),
        "seed": seed,
        "started": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        "versions": {
            "torch": torch.__version__,
            "torchrl": torchrl.__version__,
            "tensordict": tensordict.__version__,
        },
    }


EVAL_SEED = 2**20  # test tasks are drawn from their own stream, never seen in training
#: train.keep_best's validation tasks: a stream of their own, apart from the test tasks' (and
#: from the training seeds, small integers), so that selecting a policy never reads the tests.
VALIDATION_SEED = 2**21
PPO_LOSS_TERMS = ("loss_objective", "loss_critic", "loss_entropy")
#: Where ``ppo_update`` puts the rewards scaled for PPO (``algo.ppo.normalize_reward``), under
#: ``"next"``; GAE reads them there and ``("next", "reward")`` keeps the raw rewards.
SCALED_REWARD_KEY = "reward_scaled_for_ppo"
#: What ``ppo_update`` logs of ClipPPOLoss's output (those it returns), beside ``grad_norm``.
PPO_LOGGED_TERMS = (*PPO_LOSS_TERMS, "entropy", "clip_fraction", "kl_approx")


def ppo_loss_arguments(ppo) -> dict[str, Any]:
    """``ClipPPOLoss``'s keyword arguments for ``config.algo.ppo`` (the trainer's PPO loss).

    Examples
    --------
    >>> from torchrl_bamdp.configs import load_config
    >>> args = ppo_loss_arguments(load_config({}).algo.ppo)
    >>> args["loss_critic_type"], args["normalize_advantage"]
    ('smooth_l1', True)
    """
    return {
        "clip_epsilon": ppo.clip_epsilon,
        "entropy_coeff": ppo.entropy_coef,
        "critic_coeff": ppo.critic_coef,
        "loss_critic_type": "smooth_l1",
        # Per minibatch here, or over the whole batch after GAE (algo.ppo.advantage_norm).
        "normalize_advantage": ppo.normalize_advantage and ppo.advantage_norm == "minibatch",
        "clip_value": ppo.value_clip,
    }


class Trainer:
    """Train any agent of ``config.algo``: collect whole tasks, PPO on ``hyper_state``, ELBO.

    Every iteration collects ``env.num_envs x steps_per_batch`` frames with a TorchRL
    ``Collector`` over the belief-transformed batched env (or, with ``train.collector`` process
    or ray, with TorchRL's multi-process or Ray collectors over replicas of it, synced after every
    update: :mod:`torchrl_bamdp.trainers.collection`), stores finished BAMDP trajectories in
    the trajectory buffer, runs the PPO epochs (ClipPPOLoss + GAE on ``hyper_state``) and the
    ELBO updates (VariBAD only), logs, evaluates on fixed test tasks and checkpoints. Agents
    that are not trained (``bayes_optimal``, ``random``) are only evaluated. ``Trainer(config,
    run_dir)`` on a run directory that holds a checkpoint continues from it; a corrupt checkpoint,
    or one from a run with another architecture or env, raises a
    :class:`~torchrl_bamdp.trainers.checkpoint.CheckpointError` before anything is written.

    Numerical faults (NaN/inf in a loss term, a total gradient norm, or the rewards, observations
    and beliefs of a collected batch) are handled as ``train.on_nonfinite`` says: the faulty step
    or batch is skipped and counted (``health/skipped_updates_ppo``,
    ``health/skipped_updates_elbo``, ``health/skipped_batches``), or the run stops with a
    :class:`~torchrl_bamdp.trainers.health.NonFiniteError`.

    With ``train.keep_best`` every evaluation is joined by a validation meta-test on tasks of
    their own (``VALIDATION_SEED``), and the run ends with the best validated policy (the final
    one competes too): :meth:`train` returns that policy's test result, and a ``read_only``
    trainer (``bamdp-eval``) loads it. The checkpoint also keeps the last policy, which a resume
    continues to train.

    Parameters
    ----------
    config : Config
        A validated configuration (:func:`torchrl_bamdp.configs.load_config`).
    run_dir : str or Path
        Where config, metrics and checkpoints are written.
    read_only : bool
        Load the run's checkpoint for evaluation and write nothing (no config, metrics or
        logger); :meth:`train` is then refused.
    refuse_finished : bool
        Raise :class:`~torchrl_bamdp.trainers.checkpoint.NothingToTrainError` when the run's
        checkpoint already holds ``train.total_frames`` frames, before any file of the run is
        written (``bamdp-train`` does; by default :meth:`train` says so and only evaluates).
    agent : callable, optional
        ``agent(config, env) -> Agent`` builds the agent instead of
        :func:`~torchrl_bamdp.trainers.agents.build_agent`: a user-made hyper-state transform
        and policy trained by this same loop. ``config.json`` does not record it, so a later
        process (resume, ``bamdp-eval``) must pass it again; a builder registered by name
        (:func:`~torchrl_bamdp.algorithms.register_algorithm`) or named by import path
        (``algo.builder``) is found without it (see ``tutorials/04_swap_the_belief.py``).

    Examples
    --------
    >>> import tempfile
    >>> from torchrl_bamdp.configs import load_config
    >>> cfg = load_config({"env": {"num_envs": 4}, "train": {"total_frames": 240,
    ...                    "eval_tasks": 21, "progress_bar": False,
    ...                    "figures": False}})  # figures: seconds of matplotlib
    >>> result = Trainer(cfg, tempfile.mkdtemp()).train()
    >>> result["frames"]
    240
    """

    def __init__(
        self,
        config: Config,
        run_dir: str | Path,
        read_only: bool = False,
        agent: Callable[[Config, Any], Agent] | None = None,
        refuse_finished: bool = False,
    ) -> None:
        self.config = config
        self.run_dir = Path(run_dir)
        self.read_only = read_only
        if not read_only:
            self.run_dir.mkdir(parents=True, exist_ok=True)
        self.device = torch.device(config.device)
        torch.set_num_threads(config.train.num_threads)
        torch.manual_seed(config.seed)

        env_cfg = config.env
        self.env = make_env_from_config(env_cfg, seed=config.seed, device=self.device)
        self.agent = (agent or build_agent)(config, self.env).to(self.device)
        self._agent_builder = agent  # also builds the replicas of train.collector=process|ray
        self.train_env = self.agent.transformed_env(self.env)

        ppo = config.algo.ppo
        # Reference policies (bayes_optimal, random) have no critic and are not trained.
        self.gae = self.ppo_loss = self.ppo_optimizer = self.elbo_optimizer = None
        self.return_scaler: ReturnScaler | None = None
        if self.agent.trains_policy:
            self.gae = GAE(
                gamma=ppo.gamma, lmbda=ppo.lmbda, value_network=self.agent.critic, average_gae=False
            )
            # TorchRL's ClipPPOLoss, its forward computed from the minibatch's tensors (same
            # outputs and gradients, fewer tensordict round trips: objectives/ppo.py).
            self.ppo_loss = TensorClipPPOLoss(
                self.agent.actor,
                self.agent.critic,
                diagnostics=False,  # PPO_LOGGED_TERMS only
                **ppo_loss_arguments(ppo),
            )
            # foreach: multi-tensor ops over all parameters at once instead of the CPU default's
            # Python loop over them; bit-identical to the loop.
            self.ppo_optimizer = torch.optim.Adam(
                self.agent.policy_parameters(), lr=ppo.lr, eps=ppo.adam_eps, foreach=True
            )
            if ppo.normalize_reward:
                self.return_scaler = ReturnScaler(ppo.gamma).to(self.device)
                # GAE reads the scaled reward from its own entry; ("next", "reward") stays the
                # raw one that acting saw (RL2's re-encoded memory reads it; see ppo_update).
                self.gae.set_keys(reward=SCALED_REWARD_KEY)
        # The ELBO's own random stream (sub-sampling, latent samples): with it an ELBO update
        # draws the same numbers whether it runs after PPO or beside it (train.parallel_updates).
        # On the CPU, like the task and buffer generators: a seed draws the same numbers, and a
        # checkpoint's state loads, on any device.
        self.elbo_generator = torch.Generator().manual_seed(config.seed + 1)
        # One model optimiser for the losses on buffered trajectories: the ELBO and the agent's
        # auxiliary losses, stepped together on their summed terms (see Agent.aux_losses).
        model_losses = [self.agent.elbo_loss, *self.agent.aux_losses.values()]
        model_losses = [loss for loss in model_losses if loss is not None]
        if model_losses:
            params = unique_parameters(*model_losses)
            if not params:
                raise ValueError(
                    f"agent {self.agent.name!r}: its auxiliary losses "
                    f"{sorted(self.agent.aux_losses)} have no parameters to train"
                )
            self.elbo_optimizer = torch.optim.Adam(params, lr=config.algo.elbo.lr, foreach=True)
        if self.agent.elbo_loss is not None:
            self.agent.elbo_loss.generator = self.elbo_generator
        self.schedules = Schedules(config, self.ppo_loss, self.ppo_optimizer, self.elbo_optimizer)
        self.buffer = TrajectoryBuffer(
            capacity=config.algo.elbo.buffer_trajectories,
            horizon=env_cfg.horizon,
            generator=torch.Generator().manual_seed(config.seed),
        )
        self.frames = 0
        self.iteration = 0
        # Wall-clock seconds spent in training iterations, summed over every resume of the run.
        self.train_seconds = 0.0
        self.last_eval: dict[str, Any] | None = None
        # train.keep_best: {"frames", "iteration", "validation": result, "policy": snapshot,
        # "validated_frames": the frames of the last validation}.
        self.best: dict[str, Any] | None = None
        # The last policy while the agent holds the selected one (after train(), keep_best).
        self._last_policy: dict[str, Any] | None = None
        self.health = HealthMonitor(config.train.on_nonfinite, config.train.max_skipped_updates)
        self.checkpoint_path = self.run_dir / "checkpoints" / CHECKPOINT_NAME
        self.logger: MetricsLogger | None = None
        if read_only:
            if not self.checkpoint_path.exists():
                raise FileNotFoundError(f"no checkpoint to evaluate at {self.checkpoint_path}")
            self.load_checkpoint(self.checkpoint_path)
            if config.train.keep_best and self.best is not None:
                load_policy_state(self, self.best["policy"])  # what the run ended with
            return
        # The checkpoint is checked before the run files are written: a resume with a mismatched
        # architecture must not overwrite the config.json that matches the checkpoint.
        if self.checkpoint_path.exists():
            self.load_checkpoint(self.checkpoint_path)
            finished = self._nothing_to_train()
            if refuse_finished and finished is not None:
                raise NothingToTrainError(finished)
        self._write_run_files()
        self.logger = MetricsLogger(self.run_dir, config)
        # Whatever a killed process logged after its last checkpoint (or before its first one:
        # iteration 0) is redone now, so it must not stay in the logs twice.
        self.logger.truncate_after(self.iteration)
        self._truncate_eval_log(self.iteration)

    # -- setup ------------------------------------------------------------------------------
    def _write_run_files(self) -> None:
        atomic_write_text(
            self.run_dir / "config.json", json.dumps(config_to_dict(self.config), indent=2)
        )
        # One entry per start (the first run and every resume): what produced these numbers.
        info_path = self.run_dir / "run_info.json"
        sessions = json.loads(info_path.read_text()) if info_path.exists() else []
        sessions.append(environment_info(self.config.seed))
        atomic_write_text(info_path, json.dumps(sessions, indent=2))

    def _truncate_eval_log(self, iteration: int) -> None:
        """Keep only the evaluations of iterations up to ``iteration`` in ``eval.jsonl`` (and
        the validations of ``train.keep_best`` in ``validation.jsonl``)."""
        for name in ("eval.jsonl", "validation.jsonl"):
            self._truncate_jsonl(self.run_dir / name, iteration)

    @staticmethod
    def _truncate_jsonl(path: Path, iteration: int) -> None:
        if not path.exists():
            return
        kept = []
        for line in path.read_text().splitlines():
            try:
                entry = json.loads(line)
            except json.JSONDecodeError:  # a line torn by a kill
                continue
            if entry.get("iteration", 0) <= iteration:
                kept.append(line)
        atomic_write_text(path, "".join(f"{line}\n" for line in kept))

    def _make_eval_env(
        self,
        num_tasks: int,
        episodes: int,
        distribution: str | None = None,
        env_changes: dict[str, Any] | None = None,
        seed: int = EVAL_SEED,
    ) -> TransformedEnv:
        env_cfg = self.config.env
        env = make_env_from_config(
            env_cfg,
            seed=seed,
            device=self.device,
            num_envs=num_tasks,
            episodes_per_task=episodes,
            stratified=self.config.eval_stratified,
            tasks=distribution or env_cfg.train_tasks,
            **(env_changes or {}),
        )
        return self.agent.transformed_env(env)

    # -- one iteration ----------------------------------------------------------------------
    def ppo_update(self, batch: TensorDictBase) -> dict[str, float]:
        """PPO epochs on a ``[num_envs, T]`` batch; returns mean loss terms."""
        ppo = self.config.algo.ppo
        if isinstance(self.agent.acting_policy, SamplingPolicy) and (
            self.agent.actor.log_prob_keys[0] not in batch
        ):
            # Collected by the lean SamplingPolicy: the behaviour log-probabilities, from the
            # very actor that acted (it is unchanged until this update), in one batched call.
            # A batch that carries them (train.collector=process_async, whose worker acted one
            # update behind) keeps the ones recorded while acting.
            add_log_probs(self.agent.actor, batch)
        if self.return_scaler is not None:
            # GAE sees scaled rewards, under their own key. The raw ones stay where they were:
            # the memory PPO re-encodes with gradients (RL2) reads ("next", "reward") as the
            # belief transform did while acting; overwritten, every stored task was re-encoded
            # from rewards the policy never acted on, and PPO's ratios started far from 1.
            reward = batch.get(("next", "reward"))
            self.return_scaler.update(reward, batch.get(("next", "done")))
            batch = batch.clone(False)
            batch.set(("next", SCALED_REWARD_KEY), self.return_scaler.scale(reward))
        with torch.no_grad():
            self.gae(batch)
            if ppo.normalize_advantage and ppo.advantage_norm == "batch":
                normalize_advantage(batch)  # the original: over every env and step at once
        # Logged terms are summed on the device (float64, in minibatch order: the same sums as
        # adding Python floats) and read once per update; the only per-minibatch read is the
        # one finiteness test that decides whether the step is taken.
        keys: list[str] | None = None
        sums: torch.Tensor | None = None
        count = 0
        clip_groups = self._ppo_clip_groups()
        for _ in range(ppo.epochs):
            if self.agent.reencode is not None and ppo.recurrent_minibatch == "steps":
                minibatches = self._step_minibatches(batch, ppo.minibatches)
            elif self.agent.reencode is not None:
                minibatches = self._trajectory_minibatches(batch, ppo.minibatches)
            else:
                flat = batch.reshape(-1)
                # Only the entries the loss reads are permuted (a tenth of a GridNavi batch's);
                # a loss without the list (e.g. TorchRL's own) gets them all.
                read = getattr(self.ppo_loss, "minibatch_keys", None)
                if read is not None:
                    flat = flat.select(*read, strict=False)
                perm = torch.randperm(flat.shape[0], device=flat.device)
                minibatches = flat[perm].split(flat.shape[0] // ppo.minibatches)
            for minibatch in minibatches:
                losses = self.ppo_loss(minibatch)
                loss = losses["loss_objective"] + losses["loss_critic"] + losses["loss_entropy"]
                self.ppo_optimizer.zero_grad(set_to_none=True)
                loss.backward()
                # The norm before clipping, over all of PPO's parameters either way.
                norms = [nn.utils.clip_grad_norm_(g, ppo.max_grad_norm) for g in clip_groups]
                grad_norm = (
                    norms[0] if len(norms) == 1 else torch.stack(norms).square().sum().sqrt()
                )
                if not bool(torch.isfinite(loss.detach()) & torch.isfinite(grad_norm)):
                    self.ppo_optimizer.zero_grad(set_to_none=True)
                    terms = {k: losses[k] for k in PPO_LOSS_TERMS}
                    if math.isfinite(float(loss.detach())):
                        self._skip_update("ppo", "gradient", terms, grad_norm=float(grad_norm))
                    else:
                        self._skip_update("ppo", "loss", terms)
                    continue
                self.ppo_optimizer.step()
                self.health.ok("ppo")
                if keys is None:
                    keys = [k for k in PPO_LOGGED_TERMS if k in losses]
                values = torch.stack(
                    [losses[k].detach().mean().double() for k in keys] + [grad_norm.double()]
                )
                sums = values if sums is None else sums + values
                count += 1
        # Update the input statistics only after the epochs, so that the stored action
        # log-probabilities come from the very policy the PPO ratio starts from.
        networks = nn.ModuleList([self.agent.actor, self.agent.critic])
        for normalizer in find_input_normalizers(networks):
            normalizer.update(batch.get(normalizer.key))
        metrics = {}
        if count:
            names = [*keys, "grad_norm"]
            metrics = {k: v / count for k, v in zip(names, sums.tolist(), strict=True)}
        metrics["lr"] = self.ppo_optimizer.param_groups[0]["lr"]
        return metrics

    def _ppo_clip_groups(self) -> list[list[nn.Parameter]]:
        """The parameter groups whose gradient norms PPO clips, each at ``max_grad_norm``.

        ``algo.ppo.grad_clip=joint``: all of them at once. ``per_network``: the actor and critic,
        and the encoder PPO re-encodes through (RL2) on its own, as the original clips each of
        its two optimisers' networks (``policy_max_grad_norm`` for both).
        """
        params = [p for g in self.ppo_optimizer.param_groups for p in g["params"]]
        encoder = self.agent.encoder if self.agent.reencode is not None else None
        if self.config.algo.ppo.grad_clip == "joint" or encoder is None:
            return [params]
        encoder_ids = {id(p) for p in encoder.parameters()}
        groups = [
            [p for p in params if id(p) not in encoder_ids],
            [p for p in params if id(p) in encoder_ids],
        ]
        return [group for group in groups if group]

    def _skip_update(
        self, kind: str, what: str, terms: dict[str, Any], grad_norm: float | None = None
    ) -> None:
        """Report a non-finite loss or gradient of the ``kind`` update: raise, or count a skip."""
        name = kind.upper()
        where = f"at iteration {self.iteration} ({self.frames} frames)"
        if what == "loss":
            bad = nonfinite_terms(terms) or ["the weighted sum of the terms"]
            report = f"non-finite {name} loss {where}: {', '.join(bad)} ({format_terms(terms)})"
        else:
            report = (
                f"non-finite {name} gradient {where}: total gradient norm {grad_norm} with "
                f"finite loss terms ({format_terms(terms)})"
            )
        self.health.fault(kind, report)

    def _trajectory_minibatches(self, batch: TensorDictBase, minibatches: int):
        """Minibatches of whole tasks whose hyper-state is re-encoded with gradients."""
        horizon = self.config.env.horizon
        tasks = batch.reshape(-1, horizon) if batch.shape[1] != horizon else batch
        perm = torch.randperm(tasks.shape[0], device=tasks.device)
        for chunk in tasks[perm].split(max(1, tasks.shape[0] // minibatches)):
            chunk = chunk.clone(False)
            chunk.set("hyper_state", self.agent.reencode(chunk))
            yield chunk.reshape(-1)

    def _step_minibatches(self, batch: TensorDictBase, minibatches: int):
        """Minibatches of random steps of every task (``algo.ppo.recurrent_minibatch=steps``).

        Before each minibatch the whole batch is re-encoded with gradients (lazily: after the
        previous minibatch's optimiser step, so every step sees the memory of the current
        parameters, as the original does); the minibatch is one part of a random permutation
        of all ``num_tasks x T`` steps, its gradient flowing back through the memory of each
        step's task.
        """
        horizon = self.config.env.horizon
        tasks = batch.reshape(-1, horizon) if batch.shape[1] != horizon else batch
        steps = tasks.numel()
        perm = torch.randperm(steps, device=tasks.device)
        for index in perm.split(steps // minibatches):
            encoded = tasks.clone(False)
            encoded.set("hyper_state", self.agent.reencode(tasks))
            yield encoded.reshape(-1)[index]

    def elbo_update(self) -> dict[str, float]:
        """``updates_per_iteration`` model steps on trajectories sampled from the buffer.

        Each step minimises the sum of the ``loss_*`` terms of the ELBO and of the agent's
        auxiliary losses (:attr:`Agent.aux_losses`), all called on the same sample. Returns the
        mean of every entry the losses return, the ELBO's by its own name (``loss_kl``, ``kl``,
        ...) and an auxiliary loss's as ``<name>/<entry>``, with the step's ``loss`` (the
        total), ``grad_norm``, ``grad_norm_max`` and ``lr``.
        """
        elbo = self.config.algo.elbo
        if self.elbo_optimizer is None or len(self.buffer) == 0 or elbo.updates_per_iteration == 0:
            return {}
        if self.frames < elbo.precollect_frames:  # the original waits for 5000 frames first
            return {}
        params = [p for g in self.elbo_optimizer.param_groups for p in g["params"]]
        # As in ppo_update: sums on the device, read once; one finiteness read per step.
        keys: list[str] | None = None
        sums: torch.Tensor | None = None
        max_norm: torch.Tensor | None = None
        count = 0
        for _ in range(elbo.updates_per_iteration):
            sample = self.buffer.sample(elbo.batch_trajectories).to(self.device)
            out = self._model_losses(sample)
            # TorchRL's convention: the loss module weighs its terms; the objective is their sum
            # (the unweighted diagnostics beside them are logged, not trained).
            terms = {k: v for k, v in out.items() if k.rpartition("/")[2].startswith("loss_")}
            loss = sum(terms.values())
            self.elbo_optimizer.zero_grad(set_to_none=True)
            loss.backward()
            if elbo.max_grad_norm is not None:
                grad_norm = nn.utils.clip_grad_norm_(params, elbo.max_grad_norm)
            else:
                grad_norm = nn.utils.get_total_norm([p.grad for p in params if p.grad is not None])
            grad_norm = grad_norm.detach()  # before clipping
            if not bool(torch.isfinite(loss.detach()) & torch.isfinite(grad_norm)):
                self.elbo_optimizer.zero_grad(set_to_none=True)
                if math.isfinite(float(loss.detach())):
                    self._skip_update("elbo", "gradient", terms, grad_norm=float(grad_norm))
                else:
                    self._skip_update("elbo", "loss", terms)
                continue
            self.elbo_optimizer.step()
            self.health.ok("elbo")
            if keys is None:
                keys = list(out.keys())
            values = torch.stack(
                [torch.as_tensor(out[k]).detach().double().reshape(()) for k in keys]
                + [loss.detach().double(), grad_norm.double()]
            )
            sums = values if sums is None else sums + values
            max_norm = grad_norm if max_norm is None else torch.maximum(max_norm, grad_norm)
            count += 1
        metrics = {}
        if count:
            names = [*keys, "loss", "grad_norm", "grad_norm_max"]
            means = (sums / count).tolist() + [float(max_norm)]
            metrics = dict(zip(names, means, strict=True))
        metrics["lr"] = self.elbo_optimizer.param_groups[0]["lr"]
        return metrics

    def _model_losses(self, sample: TensorDictBase) -> dict[str, torch.Tensor]:
        """Every entry of the ELBO's and the auxiliary losses' outputs on ``sample``, in order:
        the ELBO's by their own names, an auxiliary loss's as ``<name>/<entry>``."""
        out: dict[str, torch.Tensor] = {}
        if self.agent.elbo_loss is not None:
            out.update(self.agent.elbo_loss(sample).items())
        for name, module in self.agent.aux_losses.items():
            out.update((f"{name}/{key}", value) for key, value in module(sample).items())
        return out

    def evaluate(
        self,
        num_tasks: int | None = None,
        episodes: int | None = None,
        policy: Any | None = None,
        distribution: str | None = None,
        env_changes: dict[str, Any] | None = None,
        seed: int = EVAL_SEED,
        keep_rollout: bool = False,
    ) -> MetaTestResult:
        """Meta-test on the fixed test tasks (``train.eval_tasks``, ``train.eval_episodes``).

        ``policy`` defaults to the trained actor; pass e.g.
        ``uniform_random_policy(trainer.env.action_spec.n)`` for a reference on the same tasks.
        ``distribution`` names the task distribution the test tasks come from (default
        ``env.train_tasks``: in distribution; e.g. one of ``env.test_tasks``). ``episodes`` may
        exceed the trained ``env.episodes_per_task`` (the original meta-tests GridNavi agents
        on 6): the agent's transforms carry on past the trained horizon, and its time features
        (``algo.ppo.time_features``) stay at their last trained value (see
        :func:`~torchrl_bamdp.transforms.time_features`). ``env_changes`` replace fields of the
        test env (arguments of :func:`~torchrl_bamdp.envs.make_env`), e.g. ``{"switching_hazard":
        0.05, "episode_length": 200}`` with ``episodes=1`` meta-tests a fixed-task run on the
        task-switching env (``trainers.runs.evaluate_run_switching``). ``seed`` draws the tasks
        (default ``EVAL_SEED``: the test tasks; ``VALIDATION_SEED``: ``train.keep_best``'s).
        ``keep_rollout`` keeps the whole rollout in the result's ``rollout``.
        """
        train = self.config.train
        episodes = episodes or train.eval_episodes or self.config.env.episodes_per_task
        env = self._make_eval_env(
            num_tasks or train.eval_tasks, episodes, distribution, env_changes, seed
        )
        length = (env_changes or {}).get("episode_length", self.config.env.episode_length)
        try:
            return meta_test(
                env,
                self.agent.policy_for(env) if policy is None else policy,
                episodes=episodes,
                episode_length=length,
                seed=seed,
                deterministic=train.eval_deterministic,
                keep_rollout=keep_rollout,
            )
        finally:
            env.close()  # the simulators (and MuJoCo worker processes) of this evaluation

    # -- main loop --------------------------------------------------------------------------
    def train(self) -> dict[str, Any]:
        """Run until ``train.total_frames``; returns the final metrics and evaluation."""
        if self.read_only:
            raise RuntimeError("this Trainer was opened read_only (evaluation); it cannot train")
        cfg = self.config
        if self._last_policy is not None:  # a second train(): continue from the last policy
            load_policy_state(self, self._last_policy)
            self._last_policy = None
        remaining = cfg.train.total_frames - self.frames
        finished = self._nothing_to_train()
        if finished is not None:
            print(f"bamdp: {finished}", file=sys.stderr, flush=True)
        if remaining > 0 and self.agent.trains_policy:
            self._train_frames(remaining)
        if self.last_eval is None or self.last_eval.get("frames") != self.frames:
            self._run_eval()
        keep_best = cfg.train.keep_best and self.agent.trains_policy
        if keep_best and (self.best is None or self.best["validated_frames"] != self.frames):
            self._validate()  # the final policy competes too
        self.save_checkpoint()  # the last policy (a resume trains on from it) and the best
        result = {"frames": self.frames, "iterations": self.iteration, "eval": self.last_eval}
        if keep_best:
            result.update(self._use_best())
        if cfg.train.figures:
            self.write_figures()
        self.logger.close()
        return result

    def _nothing_to_train(self) -> str | None:
        """Why a resumed run has nothing left to train (``None`` when it has)."""
        total = self.config.train.total_frames
        if self.frames == 0 or self.frames < total or not self.agent.trains_policy:
            return None
        return (
            f"nothing to train: {self.run_dir} has trained {self.frames} frames already, "
            f"train.total_frames={total}; resume with a larger train.total_frames (e.g. "
            f"resume={self.run_dir} train.total_frames={2 * self.frames}) to continue, "
            "or use bamdp-eval to evaluate it"
        )

    def _train_frames(self, remaining: int) -> None:
        cfg = self.config
        frames_per_batch = cfg.frames_per_batch
        # Whole batches only: a partial last batch would cut tasks in half.
        total = math.ceil(remaining / frames_per_batch) * frames_per_batch
        if total != remaining:
            print(
                f"bamdp: train.total_frames={cfg.train.total_frames} is not a whole number of "
                f"batches of {frames_per_batch} frames (env.num_envs={cfg.env.num_envs} x "
                f"{frames_per_batch // cfg.env.num_envs} steps): training {total} frames, to "
                f"{self.frames + total} in all",
                file=sys.stderr,
                flush=True,
            )
        # train.collector: here (single), or worker processes / Ray actors with their own copy
        # of env, hyper-state transforms and policy, synced after every update.
        collector = TrainCollector(
            cfg, self.agent, self.train_env, total, frames=self.frames, builder=self._agent_builder
        )
        progress = ProgressBar(cfg.train.total_frames, self.frames, cfg.train.progress_bar)
        start, last_time, last_frames = time.perf_counter(), time.perf_counter(), self.frames
        deadline = None
        if cfg.train.max_minutes is not None:
            deadline = start + 60.0 * cfg.train.max_minutes
        worker = None
        if self.parallel_updates:
            num_threads = cfg.train.num_threads
            worker = ThreadPoolExecutor(
                max_workers=1,
                thread_name_prefix="elbo-update",
                initializer=lambda: torch.set_num_threads(num_threads),
            )
        try:
            for batch in collector:
                self.iteration += 1
                self.frames += batch.numel()
                healthy = self._check_batch(batch)
                added = self.buffer.extend_from_batch(batch) if healthy else 0
                metrics: dict[str, float] = {"train/trajectories_added": added}
                if healthy:
                    # Inner episodes the batch holds whole, by index (several tasks per env, or
                    # a batch cut mid-task, are counted right).
                    episode_returns = completed_episode_returns(batch, cfg.env.episodes_per_task)
                    for k, value in enumerate(episode_returns.tolist()[:8]):
                        if math.isfinite(value):
                            metrics[f"train/return_episode_{k + 1}"] = value
                # Entropy coefficient and learning rates for this batch's updates.
                metrics.update(self.schedules.step(frames_before=self.frames - batch.numel()))
                ppo_metrics, elbo_metrics = self._update(batch if healthy else None, worker)
                collector.sync()  # the workers' policy and belief model (train.collector)
                metrics.update({f"ppo/{key}": value for key, value in ppo_metrics.items()})
                # An auxiliary loss's entries come named <name>/<entry>; the rest are the ELBO's.
                metrics.update(
                    {(k if "/" in k else f"elbo/{k}"): v for k, v in elbo_metrics.items()}
                )
                metrics.update(self.health.metrics())
                now = time.perf_counter()
                metrics["perf/fps"] = (self.frames - last_frames) / max(now - last_time, 1e-9)
                metrics["perf/wall_clock"] = now - start
                self.train_seconds += now - last_time
                metrics["perf/train_seconds"] = self.train_seconds
                last_time, last_frames = now, self.frames
                every = cfg.train.eval_interval
                if every and self.iteration % every == 0:
                    metrics.update(self._run_eval(log=False))
                    if cfg.train.keep_best:
                        metrics.update(self._validate(log=False))
                self.logger.log(metrics, step=self.frames, iteration=self.iteration)
                every = cfg.train.checkpoint_interval
                if every and self.iteration % every == 0:
                    self.save_checkpoint()
                test_return = self.last_eval["total_mean"] if self.last_eval else None
                progress.update(batch.numel(), metrics["perf/fps"], test_return)
                if deadline is not None and time.perf_counter() >= deadline:
                    break
        finally:
            if worker is not None:
                worker.shutdown(wait=True)
            collector.shutdown()
            progress.close()

    @property
    def parallel_updates(self) -> bool:
        """Whether the ELBO update runs in a second thread while PPO updates.

        It does with ``train.parallel_updates`` when the run has both updates and they train
        disjoint parameters (not with ``algo.ppo.encoder_grad=true``, where PPO trains the
        encoder too: then they run one after the other).
        """
        if not self.config.train.parallel_updates:
            return False
        if self.ppo_optimizer is None or self.elbo_optimizer is None:
            return False
        ppo_params = {id(p) for g in self.ppo_optimizer.param_groups for p in g["params"]}
        elbo_params = {id(p) for g in self.elbo_optimizer.param_groups for p in g["params"]}
        return not ppo_params & elbo_params

    def _update(
        self, batch: TensorDictBase | None, worker: ThreadPoolExecutor | None
    ) -> tuple[dict[str, float], dict[str, float]]:
        """The PPO update on ``batch`` (skipped when ``None``) and the ELBO update.

        With a ``worker`` the ELBO update runs in it while PPO runs here. The two touch disjoint
        parameters, optimisers and random streams (the ELBO's generator and the buffer's; PPO
        the global one), and PPO reads only the batch's stored beliefs, so the result is the
        same as one after the other; only the wall-clock differs (torch releases the GIL
        inside its operators, so the second core does the ELBO's work).
        """
        if worker is None:
            ppo_metrics = self.ppo_update(batch) if batch is not None else {}
            return ppo_metrics, self.elbo_update()
        elbo_future = worker.submit(self.elbo_update)
        try:
            ppo_metrics = self.ppo_update(batch) if batch is not None else {}
        except BaseException:
            wait([elbo_future])  # never leave an ELBO step running past the error
            raise
        return ppo_metrics, elbo_future.result()

    def _check_batch(self, batch: TensorDictBase) -> bool:
        """``True`` if the batch is finite; otherwise report it (raise, or count a skip).

        A skipped batch is used neither for PPO nor for the ELBO's trajectory buffer; the
        unfinished trajectory tails it would have completed are dropped as well.
        """
        faults = nonfinite_entries(batch)
        if not faults:
            self.health.ok("batch")
            return True
        self.buffer.discard_partial()
        entries = "; ".join(f"{key}: {where}" for key, where in faults.items())
        self.health.fault(
            "batch",
            f"non-finite values in the batch collected at iteration {self.iteration} "
            f"({self.frames} frames): {entries}",
        )
        return False

    def _run_eval(self, log: bool = True) -> dict[str, float]:
        result = self.evaluate()
        self.last_eval = {"frames": self.frames, **result.to_dict()}
        metrics = {"eval/return_total": self.last_eval["total_mean"]}
        for k, (m, s) in enumerate(zip(result.mean, result.stderr, strict=True)):
            metrics[f"eval/return_episode_{k + 1}"] = m
            metrics[f"eval/stderr_episode_{k + 1}"] = s
        with (self.run_dir / "eval.jsonl").open("a") as f:
            f.write(json.dumps({"iteration": self.iteration, **self.last_eval}) + "\n")
        rows = [
            [k + 1, m, s] for k, (m, s) in enumerate(zip(result.mean, result.stderr, strict=True))
        ]
        self.logger.log_table("eval/per_episode", ["episode", "mean", "stderr"], rows, self.frames)
        if log:
            self.logger.log(metrics, step=self.frames, iteration=self.iteration)
        return metrics

    def _validate(self, log: bool = True) -> dict[str, float]:
        """Validation meta-test of the current policy (``train.keep_best``); keeps it if best.

        The score is the return summed over the meta-test's episodes, on
        ``train.validation_tasks`` tasks of the training distribution drawn from
        ``VALIDATION_SEED``; a tie goes to the later, longer-trained policy.
        """
        train = self.config.train
        result = self.evaluate(num_tasks=train.validation_tasks, seed=VALIDATION_SEED)
        validation = result.to_dict()
        if self.best is None or validation["total_mean"] >= self.best["validation"]["total_mean"]:
            self.best = {
                "frames": self.frames,
                "iteration": self.iteration,
                "validation": validation,
                "policy": policy_state_dict(self),
            }
        self.best["validated_frames"] = self.frames  # the last policy validated, best or not
        with (self.run_dir / "validation.jsonl").open("a") as f:
            entry = {"iteration": self.iteration, "frames": self.frames, **validation}
            f.write(json.dumps(entry) + "\n")
        metrics = {
            "validation/return_total": validation["total_mean"],
            "validation/best_return_total": self.best["validation"]["total_mean"],
            "validation/best_frames": float(self.best["frames"]),
        }
        if log:
            self.logger.log(metrics, step=self.frames, iteration=self.iteration)
        return metrics

    def _use_best(self) -> dict[str, Any]:
        """Load the best validated policy into the agent and meta-test it on the test tasks.

        Returns ``train()``'s entries for it: ``eval`` (its test result, with ``selected``:
        the frames, iteration and validation score it was kept at) and ``last_eval`` (the
        last policy's test result).
        """
        assert self.best is not None
        self._last_policy = policy_state_dict(self)
        load_policy_state(self, self.best["policy"])
        result = self.evaluate()
        selected = {
            "frames": self.best["frames"],
            "iteration": self.best["iteration"],
            "validation_total_mean": self.best["validation"]["total_mean"],
            "validation_num_tasks": self.best["validation"]["num_tasks"],
        }
        evaluation = {"frames": self.frames, **result.to_dict(), "selected": selected}
        atomic_write_text(self.run_dir / "selected.json", json.dumps(evaluation, indent=2))
        metrics = {"selected/return_total": evaluation["total_mean"]}
        metrics.update((f"selected/return_episode_{k + 1}", m) for k, m in enumerate(result.mean))
        metrics["selected/frames"] = float(self.best["frames"])
        self.logger.log(metrics, step=self.frames, iteration=self.iteration)
        return {"eval": evaluation, "last_eval": self.last_eval}

    def write_figures(self) -> list[Path]:
        """This run's figures in ``<run_dir>/figures`` (PNG + PDF), also logged to W&B
        (:func:`~torchrl_bamdp.trainers.callbacks.write_run_figures`)."""
        return write_run_figures(self)

    # -- checkpoints (the state and its I/O: trainers/checkpoint.py) ------------------------
    def state_dict(self) -> dict[str, Any]:
        """Everything a resumed run needs (``trainers.checkpoint.trainer_state_dict``)."""
        return trainer_state_dict(self)

    def save_checkpoint(self) -> Path:
        """Write the checkpoint atomically (temp file + rename)."""
        return save_trainer_checkpoint(self)

    def load_checkpoint(self, path: str | Path) -> None:
        """Restore the run state from ``path``, checking it first.

        Raises
        ------
        CheckpointError
            If the file is corrupt or incomplete, was written by a run whose architecture or
            env differs from this run's (see ``checkpoint.ARCHITECTURE_FIELDS``), or a part of
            it does not load; the message names the path, both runs and the part.
            The trainer must not be used after this error (parts may be loaded already).
        """
        load_trainer_checkpoint(self, path)
