"""NaN/inf in losses, gradients and collected batches: skipped and counted, or a clear stop.

Faults are injected by wrapping the loss modules (a loss term times NaN on chosen calls), by
gradient hooks, and by wrapping the env's dynamics (a NaN reward) or the encoder (a NaN belief).
"""

from __future__ import annotations

import csv
import math
import warnings
from pathlib import Path

import pytest
import torch
from tensordict import TensorDict

from torchrl_bamdp.configs import ConfigError, load_config
from torchrl_bamdp.modules import BeliefEncoder, RewardDecoder
from torchrl_bamdp.objectives import ELBOLoss, gaussian_kl
from torchrl_bamdp.trainers import HealthMonitor, NonFiniteError, Trainer

NAN = float("nan")
ELBO_UPDATES = 4  # algo.elbo.updates_per_iteration (default)
PPO_UPDATES = 4 * 4  # algo.ppo.epochs (default) x algo.ppo.minibatches


def tiny(total_frames: int = 480, **train) -> dict:
    return {
        "seed": 0,
        "env": {"num_envs": 4},
        "algo": {"ppo": {"minibatches": 4}, "elbo": {"batch_trajectories": 8}},
        "train": {
            "total_frames": total_frames,
            "eval_tasks": 21,
            "eval_interval": 0,
            "checkpoint_interval": 0,
            "progress_bar": False,
            "figures": False,
            **train,
        },
    }


def make_trainer(run_dir: Path, total_frames: int = 480, **train) -> Trainer:
    return Trainer(load_config(tiny(total_frames, **train)), run_dir)


def metric(run_dir: Path, name: str) -> list[tuple[int, float]]:
    with (run_dir / "metrics.csv").open(newline="") as f:
        rows = [r for r in csv.DictReader(f) if r["metric"] == name]
    return [(int(r["iteration"]), float(r["value"])) for r in rows]


def all_values_finite(run_dir: Path) -> bool:
    with (run_dir / "metrics.csv").open(newline="") as f:
        return all(math.isfinite(float(r["value"])) for r in csv.DictReader(f))


def weights(module: torch.nn.Module) -> dict[str, torch.Tensor]:
    return {k: v.detach().clone() for k, v in module.named_parameters()}


def same(a: dict[str, torch.Tensor], b: dict[str, torch.Tensor]) -> bool:
    return all(torch.equal(a[k], b[k]) for k in a)


class Inject:
    """Replace ``loss.forward``: on the calls in ``nan_calls`` (1-based) multiply ``term`` by NaN.

    The weights of ``watched`` are recorded at the start of every call, so that what each update
    did to them can be checked afterwards.
    """

    def __init__(self, loss, term: str, nan_calls, watched: torch.nn.Module) -> None:
        self.inner = loss.forward
        self.term = term
        self.nan_calls = nan_calls
        self.watched = watched
        self.calls = 0
        self.snapshots: list[dict[str, torch.Tensor]] = []
        loss.forward = self

    def __call__(self, *args, **kwargs):
        self.calls += 1
        self.snapshots.append(weights(self.watched))
        out = self.inner(*args, **kwargs)
        if self.calls in self.nan_calls:
            out.set(self.term, out.get(self.term) * NAN)
        return out

    def moved(self, call: int) -> bool:
        """Whether the update of ``call`` (1-based) changed the watched weights."""
        return not same(self.snapshots[call - 1], self.snapshots[call])


class Every:
    """``x in Every()`` is always true: inject a fault on every call."""

    def __contains__(self, item) -> bool:
        return True


# -- ELBO loss ---------------------------------------------------------------------------------
def test_nan_elbo_loss_is_skipped_and_training_continues(tmp_path):
    trainer = make_trainer(tmp_path)
    inject = Inject(trainer.agent.elbo_loss, "loss_reward", {2}, trainer.agent.elbo_loss)
    with pytest.warns(RuntimeWarning, match=r"non-finite ELBO loss at iteration 1 \(240 frames\)"):
        result = trainer.train()

    assert result["frames"] == 480 and inject.calls == 2 * ELBO_UPDATES
    assert not inject.moved(2)  # the skipped update left every weight as it was
    assert inject.moved(1) and inject.moved(3)  # the others trained
    steps = {int(s["step"]) for s in trainer.elbo_optimizer.state_dict()["state"].values()}
    assert steps == {2 * ELBO_UPDATES - 1}
    assert metric(tmp_path, "health/skipped_updates_elbo") == [(1, 1.0), (2, 1.0)]
    assert metric(tmp_path, "health/skipped_updates_ppo") == [(1, 0.0), (2, 0.0)]
    assert metric(tmp_path, "health/skipped_batches") == [(1, 0.0), (2, 0.0)]
    assert all_values_finite(tmp_path)  # the NaN never reached the logged means
    assert len(metric(tmp_path, "elbo/loss")) == 2


def test_nan_elbo_loss_stops_with_stop(tmp_path):
    trainer = make_trainer(tmp_path, on_nonfinite="stop")
    inject = Inject(trainer.agent.elbo_loss, "loss_kl", {2}, trainer.agent.elbo_loss)
    with pytest.raises(NonFiniteError) as info:
        trainer.train()
    msg = str(info.value)
    assert "non-finite ELBO loss at iteration 1 (240 frames): loss_kl (" in msg, msg
    assert "loss_reward=" in msg and "on_nonfinite=stop" in msg
    assert inject.calls == 2 and inject.moved(1)  # stopped at the faulty call


def test_consecutive_skips_stop_the_run(tmp_path):
    trainer = make_trainer(tmp_path, max_skipped_updates=3)
    Inject(trainer.agent.elbo_loss, "loss_reward", Every(), trainer.agent.elbo_loss)
    with (
        pytest.warns(RuntimeWarning),
        pytest.raises(NonFiniteError, match="3 consecutive ELBO updates skipped"),
    ):
        trainer.train()
    assert trainer.health.skipped["elbo"] == 3 and trainer.iteration == 1


def test_non_consecutive_skips_do_not_stop(tmp_path):
    trainer = make_trainer(tmp_path, max_skipped_updates=2)
    Inject(trainer.agent.elbo_loss, "loss_reward", {1, 3, 5, 7}, trainer.agent.elbo_loss)
    with pytest.warns(RuntimeWarning):
        assert trainer.train()["frames"] == 480
    assert metric(tmp_path, "health/skipped_updates_elbo") == [(1, 2.0), (2, 4.0)]


def test_nan_elbo_gradient_is_skipped(tmp_path):
    trainer = make_trainer(tmp_path, 240)
    inject = Inject(trainer.agent.elbo_loss, "loss_reward", set(), trainer.agent.elbo_loss)
    hooked = trainer.agent.encoder.gru.weight_hh_l0
    fired = []

    def nan_once(grad):
        fired.append(True)
        return grad * NAN if len(fired) == 1 else grad

    hooked.register_hook(nan_once)
    with pytest.warns(RuntimeWarning, match="non-finite ELBO gradient at iteration 1") as rec:
        trainer.train()
    assert "total gradient norm nan with finite loss terms" in str(rec[0].message)
    assert not inject.moved(1) and inject.moved(2)
    assert metric(tmp_path, "health/skipped_updates_elbo") == [(1, 1.0)]


# -- PPO loss ----------------------------------------------------------------------------------
def test_nan_ppo_loss_is_skipped(tmp_path):
    trainer = make_trainer(tmp_path, 240)
    inject = Inject(trainer.ppo_loss, "loss_critic", {3}, trainer.ppo_loss)
    with pytest.warns(RuntimeWarning, match="non-finite PPO loss at iteration 1 .*: loss_critic"):
        trainer.train()
    assert inject.calls == PPO_UPDATES
    assert not inject.moved(3) and inject.moved(2) and inject.moved(4)
    assert metric(tmp_path, "health/skipped_updates_ppo") == [(1, 1.0)]
    assert all_values_finite(tmp_path)


def test_nan_ppo_loss_stops_with_stop(tmp_path):
    trainer = make_trainer(tmp_path, 240, on_nonfinite="stop")
    Inject(trainer.ppo_loss, "loss_objective", {1}, trainer.ppo_loss)
    with pytest.raises(NonFiniteError, match=r"non-finite PPO loss at iteration 1 \(240 frames\)"):
        trainer.train()


def test_nan_ppo_gradient_is_skipped(tmp_path):
    trainer = make_trainer(tmp_path, 240)
    inject = Inject(trainer.ppo_loss, "loss_critic", set(), trainer.ppo_loss)
    fired = []

    def inf_once(grad):
        fired.append(True)
        return grad * math.inf if len(fired) == 1 else grad

    next(trainer.agent.critic.parameters()).register_hook(inf_once)
    with pytest.warns(RuntimeWarning, match="non-finite PPO gradient at iteration 1"):
        trainer.train()
    assert not inject.moved(1) and inject.moved(2)
    assert metric(tmp_path, "health/skipped_updates_ppo") == [(1, 1.0)]


# -- collected batches -------------------------------------------------------------------------
def inject_nan_reward(trainer: Trainer, at_steps, env_index: int = 1) -> None:
    """Make the task env return a NaN reward for ``env_index`` on the listed step calls."""
    task_env = trainer.env.task_env
    inner = task_env._step
    calls = [0]

    def step(tensordict):
        calls[0] += 1
        out = inner(tensordict)
        if calls[0] in at_steps:
            reward = out.get("reward").clone()
            reward[env_index] = NAN
            out.set("reward", reward)
        return out

    task_env._step = step


def test_nan_reward_batch_is_skipped(tmp_path):
    trainer = make_trainer(tmp_path)
    inject_nan_reward(trainer, {30})  # iteration 1, mid-task
    ppo_batches = []
    update = trainer.ppo_update
    trainer.ppo_update = lambda batch: ppo_batches.append(batch) or update(batch)
    with pytest.warns(RuntimeWarning, match="non-finite values in the batch collected") as rec:
        trainer.train()
    msg = str(rec[0].message)
    assert "iteration 1 (240 frames)" in msg and "('next', 'reward'): 1 value(s)" in msg, msg
    assert "('next', 'belief', 'mean')" in msg  # the belief took the NaN in as well

    assert len(ppo_batches) == 1  # only iteration 2 reached PPO ...
    assert torch.isfinite(ppo_batches[0]["next", "reward"]).all()
    assert metric(tmp_path, "train/trajectories_added") == [(1, 0.0), (2, 4.0)]
    assert len(trainer.buffer) == 4  # ... and the ELBO buffer
    assert torch.isfinite(trainer.buffer.sample(16)["next", "reward"]).all()
    assert metric(tmp_path, "health/skipped_batches") == [(1, 1.0), (2, 1.0)]
    assert [i for i, _ in metric(tmp_path, "ppo/loss_objective")] == [2]
    assert all_values_finite(tmp_path)


def test_nan_reward_stops_with_stop(tmp_path):
    trainer = make_trainer(tmp_path, on_nonfinite="stop")
    inject_nan_reward(trainer, {59})
    with pytest.raises(NonFiniteError) as info:
        trainer.train()
    msg = str(info.value)
    assert "non-finite values in the batch collected at iteration 1 (240 frames)" in msg
    assert "('next', 'reward'): 1 value(s), first at index (1, 58, 0) (nan)" in msg, msg
    assert len(trainer.buffer) == 0


def test_nan_belief_batch_is_skipped(tmp_path):
    trainer = make_trainer(tmp_path, 240)
    encoder = trainer.agent.encoder
    inner = encoder.step
    calls = [0]

    def step(*args):
        calls[0] += 1
        mean, logvar, hidden = inner(*args)
        if calls[0] == 10:
            logvar = logvar.clone()
            logvar[2, 0] = math.inf
        return mean, logvar, hidden

    encoder.step = step
    with pytest.warns(RuntimeWarning, match=r"\('next', 'belief', 'logvar'\): 1 value\(s\)"):
        trainer.train()
    assert metric(tmp_path, "health/skipped_batches") == [(1, 1.0)]


def test_consecutive_bad_batches_stop_the_run(tmp_path):
    trainer = make_trainer(tmp_path, 960, max_skipped_updates=2)
    inject_nan_reward(trainer, Every())
    with (
        pytest.warns(RuntimeWarning),
        pytest.raises(NonFiniteError, match="2 consecutive batches skipped"),
    ):
        trainer.train()
    assert trainer.iteration == 2


def test_skip_counts_survive_a_resume(tmp_path):
    trainer = make_trainer(tmp_path, 240, checkpoint_interval=1)
    Inject(trainer.agent.elbo_loss, "loss_reward", {1}, trainer.agent.elbo_loss)
    with pytest.warns(RuntimeWarning):
        trainer.train()
    resumed = make_trainer(tmp_path, 480, checkpoint_interval=1)
    assert resumed.health.skipped["elbo"] == 1
    resumed.train()
    assert metric(tmp_path, "health/skipped_updates_elbo") == [(1, 1.0), (2, 1.0)]


# -- the ELBO gradient norm --------------------------------------------------------------------
def test_elbo_grad_norm_is_logged_every_iteration(tmp_path):
    make_trainer(tmp_path, 720).train()
    norms = metric(tmp_path, "elbo/grad_norm")
    peaks = metric(tmp_path, "elbo/grad_norm_max")
    assert [i for i, _ in norms] == [1, 2, 3] == [i for i, _ in peaks]
    assert all(0 < n <= p and math.isfinite(p) for (_, n), (_, p) in zip(norms, peaks, strict=True))


def test_elbo_gradients_are_clipped_and_the_norm_is_logged_before_clipping(tmp_path):
    config = load_config(tiny(240))
    config.algo.elbo.max_grad_norm = 1.0
    trainer = Trainer(config, tmp_path)
    with torch.no_grad():
        batch = trainer.train_env.rollout(60, trainer.agent.actor, break_when_any_done=False)
    trainer.buffer.extend_from_batch(batch)
    applied = []
    step = trainer.elbo_optimizer.step

    def recording_step(*args, **kwargs):
        grads = [p.grad for g in trainer.elbo_optimizer.param_groups for p in g["params"]]
        applied.append(float(torch.nn.utils.get_total_norm([g for g in grads if g is not None])))
        return step(*args, **kwargs)

    trainer.elbo_optimizer.step = recording_step
    out = trainer.elbo_update()
    assert len(applied) == ELBO_UPDATES
    assert max(applied) <= 1.0 + 1e-4  # what the optimizer applied was clipped ...
    assert out["grad_norm"] > 1.0 and out["grad_norm_max"] >= out["grad_norm"]  # ... not logged


def test_elbo_clipping_is_on_by_default():
    cfg = load_config({})
    assert cfg.algo.elbo.max_grad_norm is not None and cfg.algo.elbo.max_grad_norm > 0


# -- the KL with extreme inputs ----------------------------------------------------------------
@pytest.mark.parametrize("scale", [1e3, 1e10, 1e20, 1e30])
def test_kl_is_finite_for_extreme_inputs(scale):
    torch.manual_seed(0)
    encoder = BeliefEncoder(obs_dim=2, action_dim=5, discrete_actions=True, obs_embed=32)
    # an MSE reward decoder: the grid-cell one only accepts positions on the grid
    decoder = RewardDecoder(5, 2, 5, [16], discrete_actions=True)
    loss = ELBOLoss(encoder, reward_decoder=decoder, elbo_subsample=None)
    n, t = 3, 12
    sign = torch.where(torch.rand(n, t, 1) < 0.5, -1.0, 1.0)
    td = TensorDict(
        {
            "observation": scale * torch.randn(n, t, 2),
            "action": torch.randint(0, 5, (n, t)),
            "next": {"true_observation": scale * torch.randn(n, t, 2), "reward": scale * sign},
        },
        [n, t],
    )
    terms = loss(td)
    assert torch.isfinite(terms["loss_kl"]), terms["loss_kl"]
    inputs = td["action"], td["next", "reward"], td["next", "true_observation"]
    mean, logvar, _ = encoder.sequence(*inputs)
    assert torch.isfinite(mean).all()
    assert logvar.min() >= encoder.logvar_min and logvar.max() <= encoder.logvar_max
    # the gradient of the KL is finite too (what the optimizer would apply)
    terms["loss_kl"].backward()
    assert all(torch.isfinite(p.grad).all() for p in encoder.parameters() if p.grad is not None)


def test_kl_is_finite_at_the_logvar_clamp():
    torch.manual_seed(0)
    encoder = BeliefEncoder(obs_dim=2, action_dim=5, discrete_actions=True)
    with torch.no_grad():  # a head driven far out of range by training
        encoder.logvar_head.weight.mul_(1e6)
        encoder.mean_head.weight.mul_(1e3)
    loss = ELBOLoss(encoder, reward_decoder=RewardDecoder(5, 2, 5, [16], discrete_actions=True))
    td = TensorDict(
        {
            "observation": torch.randn(2, 8, 2),
            "action": torch.randint(0, 5, (2, 8)),
            "next": {"true_observation": torch.randn(2, 8, 2), "reward": torch.randn(2, 8, 1)},
        },
        [2, 8],
    )
    assert torch.isfinite(loss(td)["loss_kl"])
    z = torch.zeros(1, 5)
    extreme = gaussian_kl(z + 1e3, z + encoder.logvar_max, z - 1e3, z + encoder.logvar_min)
    assert torch.isfinite(extreme).all()


# -- the monitor and the config ----------------------------------------------------------------
def test_health_monitor_rules():
    stop = HealthMonitor("stop", max_consecutive=5)
    with pytest.raises(NonFiniteError, match="boom .train.on_nonfinite=stop."):
        stop.fault("ppo", "boom")
    skip = HealthMonitor("skip", max_consecutive=2)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        skip.fault("ppo", "a")
        skip.ok("ppo")
        skip.fault("ppo", "b")
        skip.fault("elbo", "c")
    assert skip.metrics() == {
        "health/skipped_updates_ppo": 2,
        "health/skipped_updates_elbo": 1,
        "health/skipped_batches": 0,
    }
    with pytest.raises(NonFiniteError, match="2 consecutive PPO updates skipped .* last one: d"):
        skip.fault("ppo", "d")
    restored = HealthMonitor("skip", max_consecutive=2)
    restored.load_state_dict(skip.state_dict())
    assert restored.skipped == skip.skipped and restored.consecutive == skip.consecutive
    with pytest.raises(ValueError, match="on_nonfinite"):
        HealthMonitor("ignore")


@pytest.mark.parametrize(
    ("field", "value", "phrase"),
    [
        ("on_nonfinite", "ignore", "config.train.on_nonfinite must be one of ['skip', 'stop']"),
        ("on_nonfinite", 1, "config.train.on_nonfinite must be a string"),
        ("max_skipped_updates", 0, "config.train.max_skipped_updates must be >= 1"),
        ("max_skipped_updates", 2.5, "config.train.max_skipped_updates must be an integer"),
    ],
)
def test_health_config_is_validated(field, value, phrase):
    with pytest.raises(ConfigError) as info:
        load_config({"train": {field: value}})
    assert phrase in str(info.value)


def test_health_config_defaults():
    train = load_config({}).train
    assert train.on_nonfinite == "skip" and train.max_skipped_updates == 10


def test_actor_samples_from_a_non_finite_hyper_state():
    """Collection survives a NaN belief (the trainer then discards the batch)."""
    from tensordict.nn import InteractionType, set_interaction_type
    from torchrl.data import Categorical

    from torchrl_bamdp.modules.actor_critic import make_actor_critic

    torch.manual_seed(0)
    actor, critic = make_actor_critic(12, Categorical(5, shape=(4,)))
    x = torch.randn(4, 12)
    finite = actor(TensorDict({"hyper_state": x.clone()}, [4]))["logits"]
    x[1, 3], x[2, 0], x[3, 5] = NAN, math.inf, -math.inf
    with set_interaction_type(InteractionType.RANDOM):
        td = actor(TensorDict({"hyper_state": x}, [4]))
    assert ((td["action"] >= 0) & (td["action"] < 5)).all()
    assert torch.isfinite(td["logits"]).all() and torch.isfinite(td["action_log_prob"]).all()
    torch.testing.assert_close(td["logits"][0], finite[0])  # finite rows are untouched
