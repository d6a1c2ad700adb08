"""Decoders of the VariBAD ELBO: p(r | m, ...), p(s' | m, s, a) and p(task | m).

Every decoder exposes ``nll(latent, batch) -> Tensor``: the negative log-likelihood (up to
constants) of the transitions of ``batch`` (``[N, T]`` trajectories) under each sampled latent of
``latent`` (``[N, Te, latent_dim]``), of shape ``[N, Te, T]`` (``[N, Te]`` for the task decoder).
The ELBO loss only sums these, so a user-defined decoder only has to implement ``nll``.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import torch
from torch import nn
from torch.nn import functional as F

from torchrl_bamdp.utils import make_mlp


class TransitionBatch:
    """The tensors of ``[N, T]`` trajectories that decoders condition on or reconstruct.

    Attributes are ``obs`` (s_t, the state the policy acted in), ``action`` (a_t), ``next_obs``
    (the state the transition really landed in, s_{t+1}: at an inner-episode end the true last
    state, not the next episode's start state), ``reward`` (r_{t+1}, ``[N, T, 1]``) and ``task``
    (``[N, task_dim]`` or ``None``). Since ``next_obs`` is the true s_{t+1} of every step, every
    transition is a real (s_t, a_t, r_{t+1}, s_{t+1}) and none needs masking. ``done`` and
    ``prev_done`` (``[N, T, 1]`` or ``None``) are the inner-episode-done flags of ``next_obs``
    (the transition ended an inner episode) and of ``obs`` (the state is the start state of an
    inner episode after the first), read by decoders built with ``done_input=True``.

    Examples
    --------
    >>> b = TransitionBatch(torch.zeros(2, 3, 2), torch.zeros(2, 3, dtype=torch.long),
    ...                     torch.zeros(2, 3, 2), torch.zeros(2, 3, 1))
    >>> b.select_steps(torch.tensor([0, 2])).next_obs.shape
    torch.Size([2, 2, 2])
    """

    def __init__(
        self,
        obs: torch.Tensor,
        action: torch.Tensor,
        next_obs: torch.Tensor,
        reward: torch.Tensor,
        task: torch.Tensor | None = None,
        done: torch.Tensor | None = None,
        prev_done: torch.Tensor | None = None,
    ) -> None:
        self.obs = obs
        self.action = action
        self.next_obs = next_obs
        self.reward = reward
        self.task = task
        self.done = done
        self.prev_done = prev_done

    def map_steps(self, fn) -> TransitionBatch:
        """The batch with ``fn`` applied to every per-step tensor (the task is per trajectory)."""
        flags = [None if x is None else fn(x) for x in (self.done, self.prev_done)]
        return TransitionBatch(
            fn(self.obs), fn(self.action), fn(self.next_obs), fn(self.reward), self.task, *flags
        )

    def select_steps(self, index: torch.Tensor) -> TransitionBatch:
        """Keep only the time steps ``index`` (decode sub-sampling)."""
        return self.map_steps(lambda x: x[:, index])

    def states(self, done_input: bool, owner: str) -> tuple[torch.Tensor, torch.Tensor]:
        """``(s_t, s_{t+1})``, each with its done flag appended when ``done_input`` (the
        original's ``add_done_info`` state)."""
        if not done_input:
            return self.obs, self.next_obs
        if self.done is None or self.prev_done is None:
            raise ValueError(
                f"{owner}: built with done_input=True, but the batch has no inner-episode-done "
                "flags (ELBOLoss reads them from 'episode_done' and ('next', 'episode_done'))"
            )
        return (
            torch.cat([self.obs, self.prev_done.to(self.obs.dtype)], dim=-1),
            torch.cat([self.next_obs, self.done.to(self.next_obs.dtype)], dim=-1),
        )


#: How a squared error over the dimensions of a vector target is reduced (``mse_reduction``):
#: ``"sum"`` (ours: the Gaussian NLL up to constants) or ``"mean"`` (the original's ``.mean(-1)``).
MSE_REDUCTIONS = ("sum", "mean")


def _check_mse_reduction(owner: str, mse_reduction: str) -> str:
    if mse_reduction not in MSE_REDUCTIONS:
        raise ValueError(
            f"{owner}: mse_reduction must be one of {MSE_REDUCTIONS} (got {mse_reduction!r})"
        )
    return mse_reduction


def _squared_error(prediction: torch.Tensor, target: torch.Tensor, how: str) -> torch.Tensor:
    error = (prediction - target).pow(2)
    return error.sum(-1) if how == "sum" else error.mean(-1)


def _pair(latent: torch.Tensor, per_step: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Broadcast ``latent [N, Te, L]`` against per-step ``[N, T, D]`` to ``[N, Te, T, .]``."""
    n, te, _ = latent.shape
    t = per_step.shape[1]
    return (
        latent.unsqueeze(2).expand(n, te, t, latent.shape[-1]),
        per_step.unsqueeze(1).expand(n, te, t, per_step.shape[-1]),
    )


def _action_features(action: torch.Tensor, action_dim: int, discrete: bool) -> torch.Tensor:
    if discrete:
        return F.one_hot(action.long(), action_dim).float()
    return action.float()


def _embedding(owner: str, name: str, size: int, in_dim: int) -> nn.Linear | None:
    """``Linear(in_dim, size)`` for an input embedding of width ``size`` (0: no embedding)."""
    if isinstance(size, bool) or not isinstance(size, int) or size < 0:
        raise ValueError(
            f"{owner}: {name} must be an int >= 0 (0: the raw input, no embedding; got {size!r})"
        )
    return nn.Linear(in_dim, size) if size > 0 else None


def _embedded(layer: nn.Linear | None, x: torch.Tensor) -> torch.Tensor:
    """``relu(layer(x))``, the original's ``FeatureExtractor(..., F.relu)``, or ``x`` itself."""
    return x if layer is None else F.relu(layer(x))


class GridCellRewardDecoder(nn.Module):
    """GridNavi reward decoder: one Bernoulli "the goal is here" logit per grid cell.

    The likelihood of r_{t+1} is that of the cell the agent landed in, s_{t+1}, being the goal
    (``reward > goal_threshold``). s_{t+1} is the true landing cell on every step, the last step
    of an inner episode included (the trajectories carry ``("next", "true_observation")``), so
    the decoder needs no copy of GridNavi's moves.
    ``probabilities(latent)`` gives the per-cell belief plotted as a heatmap.

    Parameters
    ----------
    latent_dim : int
        Size of m.
    grid_size : int
        Side of the grid; the head has ``grid_size**2`` outputs, cell index ``x * grid_size + y``.
    hidden : sequence of int
        Hidden layer sizes (empty: a linear head).
    goal_threshold : float
        Rewards above this count as "goal reached".
    cells_of : callable, optional
        ``cells_of(next_obs) -> [...]`` long flat cell indices of the landed states. ``None``
        (default): the states are cells ``(x, y)``. With image observations, the renderer's
        exact inverse (:meth:`~torchrl_bamdp.envs.pixels.GridRenderer.cells`): which cell a
        frame shows is a fixed function of its pixels, as it is of the state; nothing is
        learnt from it, and the decoder still reconstructs rewards only.

    Examples
    --------
    >>> dec = GridCellRewardDecoder(latent_dim=5, grid_size=5)
    >>> dec.probabilities(torch.zeros(3, 5)).shape
    torch.Size([3, 25])
    """

    def __init__(
        self,
        latent_dim: int,
        grid_size: int,
        hidden: Sequence[int] = (),
        goal_threshold: float = 0.0,
        cells_of: Callable[[torch.Tensor], torch.Tensor] | None = None,
    ) -> None:
        super().__init__()
        self.grid_size = grid_size
        self.goal_threshold = goal_threshold
        self.cells_of = cells_of
        self.net = make_mlp(latent_dim, grid_size * grid_size, hidden, activation="relu")

    def logits(self, latent: torch.Tensor) -> torch.Tensor:
        return self.net(latent)

    def probabilities(self, latent: torch.Tensor) -> torch.Tensor:
        """Per-cell probability that the goal is there, ``[..., grid_size**2]``."""
        return torch.sigmoid(self.logits(latent))

    def nll(self, latent: torch.Tensor, batch: TransitionBatch) -> torch.Tensor:
        logits = self.logits(latent)  # [N, Te, C]
        if self.cells_of is not None:
            cell = self.cells_of(batch.next_obs)
        else:
            landed = batch.next_obs.long()
            cell = landed[..., 0] * self.grid_size + landed[..., 1]
        n, te, _ = logits.shape
        index = cell.unsqueeze(1).expand(n, te, cell.shape[1])  # [N, Te, T]
        cell_logits = logits.gather(-1, index)
        target = (batch.reward[..., 0] > self.goal_threshold).float().unsqueeze(1).expand_as(index)
        return F.binary_cross_entropy_with_logits(cell_logits, target, reduction="none")


class RewardDecoder(nn.Module):
    """Continuous reward decoder p(r_{t+1} | m, s_{t+1}[, s_t, a_t]) with a squared-error NLL.

    Parameters
    ----------
    latent_dim, obs_dim, action_dim : int
        Input sizes (``action_dim`` = number of actions when ``discrete_actions``).
    hidden : sequence of int
        Hidden layers (original: ``[64, 32]``).
    use_obs, use_action : bool
        Whether to condition on s_t and a_t besides s_{t+1}.
    discrete_actions : bool
        One-hot encode integer actions.
    mse_reduction : {"sum", "mean"}
        How the squared error is reduced over the reward's dimensions (ours: ``"sum"``, the
        original: ``"mean"``; the same for a scalar reward).
    done_input : bool
        The states it reads carry their inner-episode-done flag (one more input each, as the
        original's states with ``add_done_info``; see :meth:`TransitionBatch.states`).
    obs_embed, action_embed : int
        Input embeddings. ``0`` (default, today's decoder): the MLP reads the raw states and
        action. ``> 0`` reproduces the original's ``RewardDecoder`` (``models/decoder.py``, with
        ``input_prev_state``/``input_action``): the states s_{t+1} and s_t each pass through one
        shared ``Linear(obs_dim, obs_embed)`` + ReLU, the action through its own
        ``Linear(action_dim, action_embed)`` + ReLU (one-hot first when discrete), before the
        MLP. The original sizes them as the encoder's embeddings (MuJoCo: 32 and 16). The
        features are concatenated as ``[m, s_{t+1}, s_t, a_t]`` (the original's order is
        ``[m, s_{t+1}, a_t, s_t]``: the same function class).
    obs_net : nn.Module, optional
        The state embedding itself, in place of ``Linear(obs_dim, obs_embed)`` (``obs_embed``
        is then ignored): for image observations a
        :class:`~torchrl_bamdp.modules.pixels.PixelEmbedding` of the frames s_{t+1} (and s_t),
        to its ``out_features``. The decoder still reconstructs the reward only.

    Examples
    --------
    >>> dec = RewardDecoder(latent_dim=5, obs_dim=2, action_dim=2)
    >>> b = TransitionBatch(torch.zeros(4, 7, 2), torch.zeros(4, 7, 2), torch.zeros(4, 7, 2),
    ...                     torch.zeros(4, 7, 1))
    >>> dec.nll(torch.zeros(4, 3, 5), b).shape
    torch.Size([4, 3, 7])
    >>> original = RewardDecoder(5, 2, 2, obs_embed=32, action_embed=16)
    >>> original.net[0].in_features  # m (5) + s' (32) + s (32) + a (16)
    85
    """

    def __init__(
        self,
        latent_dim: int,
        obs_dim: int,
        action_dim: int,
        hidden: Sequence[int] = (64, 32),
        use_obs: bool = True,
        use_action: bool = True,
        discrete_actions: bool = False,
        mse_reduction: str = "sum",
        obs_embed: int = 0,
        action_embed: int = 0,
        done_input: bool = False,
        obs_net: nn.Module | None = None,
    ) -> None:
        super().__init__()
        owner = type(self).__name__
        self.mse_reduction = _check_mse_reduction(owner, mse_reduction)
        self.action_dim = action_dim
        self.discrete_actions = discrete_actions
        self.use_obs = use_obs
        self.use_action = use_action
        self.done_input = bool(done_input)
        if obs_net is not None and self.done_input:
            raise ValueError(f"{owner}: obs_net embeds whole observations: no done_input")
        obs_dim = obs_dim + self.done_input
        if obs_net is not None:
            obs_encoder, obs_embed = obs_net, int(obs_net.out_features)
        else:
            obs_encoder = _embedding(owner, "obs_embed", obs_embed, obs_dim)
        action_encoder = _embedding(owner, "action_embed", action_embed, action_dim)
        # Registered only when used: the default decoder keeps today's parameter names.
        if obs_encoder is not None:
            self.obs_encoder = obs_encoder
        if action_encoder is not None and use_action:
            self.action_encoder = action_encoder
        obs_features = obs_embed or obs_dim
        action_features = action_embed or action_dim
        in_dim = latent_dim + obs_features * (1 + use_obs) + action_features * use_action
        self.net = make_mlp(in_dim, 1, hidden, activation="relu")

    def predict(self, latent: torch.Tensor, batch: TransitionBatch) -> torch.Tensor:
        obs_encoder = getattr(self, "obs_encoder", None)
        obs, next_obs = batch.states(self.done_input, type(self).__name__)
        features = [_embedded(obs_encoder, next_obs)]
        if self.use_obs:
            features.append(_embedded(obs_encoder, obs))
        if self.use_action:
            action = _action_features(batch.action, self.action_dim, self.discrete_actions)
            features.append(_embedded(getattr(self, "action_encoder", None), action))
        m, x = _pair(latent, torch.cat(features, dim=-1))
        return self.net(torch.cat([m, x], dim=-1))  # [N, Te, T, 1]

    def nll(self, latent: torch.Tensor, batch: TransitionBatch) -> torch.Tensor:
        prediction = self.predict(latent, batch)
        target = batch.reward.unsqueeze(1).expand_as(prediction)
        return _squared_error(prediction, target, self.mse_reduction)


class StateDecoder(nn.Module):
    """Next-state decoder p(s_{t+1} | m, s_t, a_t) with a squared-error NLL.

    s_{t+1} is the true next state on every step (at an inner-episode end the state the episode
    ended in, not the next start state), so every transition is decoded.

    Parameters
    ----------
    latent_dim, obs_dim, action_dim : int
        Input sizes (``action_dim`` = number of actions when ``discrete_actions``).
    hidden : sequence of int
        Hidden layers.
    discrete_actions : bool
        One-hot encode integer actions.
    mse_reduction : {"sum", "mean"}
        How the squared error is reduced over the state's dimensions: ``"sum"`` (ours) or
        ``"mean"`` (the original: with a 17-d state it weighs the term 17x less).
    done_input : bool
        s_t carries its inner-episode-done flag and s_{t+1} is predicted with its flag (one more
        output), as the original's states with ``add_done_info``.
    obs_embed, action_embed : int
        Input embeddings. ``0`` (default, today's decoder): the MLP reads the raw s_t and a_t.
        ``> 0`` reproduces the original's ``StateTransitionDecoder``: s_t and a_t each pass
        through their own ``Linear`` + ReLU of that width before the MLP (the original sizes
        them as the encoder's embeddings, e.g. 32 and 32 on Walker).

    Examples
    --------
    >>> dec = StateDecoder(latent_dim=5, obs_dim=2, action_dim=5, discrete_actions=True)
    >>> b = TransitionBatch(torch.zeros(4, 7, 2), torch.zeros(4, 7, dtype=torch.long),
    ...                     torch.zeros(4, 7, 2), torch.zeros(4, 7, 1))
    >>> dec.nll(torch.zeros(4, 3, 5), b).shape
    torch.Size([4, 3, 7])
    >>> StateDecoder(5, 17, 6, obs_embed=32, action_embed=32).net[0].in_features
    69
    """

    def __init__(
        self,
        latent_dim: int,
        obs_dim: int,
        action_dim: int,
        hidden: Sequence[int] = (64, 32),
        discrete_actions: bool = False,
        mse_reduction: str = "sum",
        obs_embed: int = 0,
        action_embed: int = 0,
        done_input: bool = False,
    ) -> None:
        super().__init__()
        owner = type(self).__name__
        self.mse_reduction = _check_mse_reduction(owner, mse_reduction)
        self.action_dim = action_dim
        self.discrete_actions = discrete_actions
        self.done_input = bool(done_input)
        obs_dim = obs_dim + self.done_input
        obs_encoder = _embedding(owner, "obs_embed", obs_embed, obs_dim)
        action_encoder = _embedding(owner, "action_embed", action_embed, action_dim)
        # Registered only when used: the default decoder keeps today's parameter names.
        if obs_encoder is not None:
            self.obs_encoder = obs_encoder
        if action_encoder is not None:
            self.action_encoder = action_encoder
        in_dim = latent_dim + (obs_embed or obs_dim) + (action_embed or action_dim)
        self.net = make_mlp(in_dim, obs_dim, hidden, activation="relu")

    def nll(self, latent: torch.Tensor, batch: TransitionBatch) -> torch.Tensor:
        action = _action_features(batch.action, self.action_dim, self.discrete_actions)
        obs, next_obs = batch.states(self.done_input, type(self).__name__)
        obs = _embedded(getattr(self, "obs_encoder", None), obs)
        action = _embedded(getattr(self, "action_encoder", None), action)
        m, x = _pair(latent, torch.cat([obs, action], dim=-1))
        prediction = self.net(torch.cat([m, x], dim=-1))
        target = next_obs.unsqueeze(1).expand_as(prediction)
        return _squared_error(prediction, target, self.mse_reduction)


class TaskDecoder(nn.Module):
    """Task decoder p(task | m), squared error; its NLL has shape ``[N, Te]``.

    Parameters
    ----------
    latent_dim, task_dim : int
        Input and output sizes.
    hidden : sequence of int
        Hidden layers.
    mse_reduction : {"sum", "mean"}
        How the squared error is reduced over the task's dimensions: ``"sum"`` (ours) or
        ``"mean"`` (the original).

    Examples
    --------
    >>> dec = TaskDecoder(latent_dim=5, task_dim=2)
    >>> b = TransitionBatch(torch.zeros(4, 7, 2), torch.zeros(4, 7, 2), torch.zeros(4, 7, 2),
    ...                     torch.zeros(4, 7, 1), task=torch.ones(4, 2))
    >>> dec.nll(torch.zeros(4, 3, 5), b).shape
    torch.Size([4, 3])
    """

    def __init__(
        self,
        latent_dim: int,
        task_dim: int,
        hidden: Sequence[int] = (64, 32),
        mse_reduction: str = "sum",
    ) -> None:
        super().__init__()
        self.mse_reduction = _check_mse_reduction(type(self).__name__, mse_reduction)
        self.net = make_mlp(latent_dim, task_dim, hidden, activation="relu")

    def nll(self, latent: torch.Tensor, batch: TransitionBatch) -> torch.Tensor:
        if batch.task is None:
            raise KeyError("TaskDecoder needs the 'task' entry in the trajectories")
        prediction = self.net(latent)
        return _squared_error(prediction, batch.task.unsqueeze(1), self.mse_reduction)
