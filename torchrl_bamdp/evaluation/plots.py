"""Figures of the VariBAD paper for GridNavi: belief rollouts, latents, returns, learning curves.

Every function here is pure: it takes plain tensors, arrays or lists (nothing from a trainer),
draws on a fresh :class:`matplotlib.figure.Figure` (no pyplot state, no ``plt.show``, so it
works under the Agg backend and from worker threads), writes ``<path_stem>.png`` and
``<path_stem>.pdf`` (creating parent directories) and returns the written paths.

- :func:`plot_belief_rollout` -- "Fig 3a": the belief heatmap at every step of one test task.
- :func:`plot_latents` -- "Fig 3b": latent mean and log-variance over the BAMDP horizon.
- :func:`plot_per_episode_returns` -- "Fig 4": meta-test return per inner-episode index.
- :func:`plot_learning_curves` -- test return against training frames.
- :func:`load_eval_curves` -- learning curve over training seeds from runs' ``eval.jsonl``.

:class:`BeliefRollout` bundles the arrays of one recorded test rollout so that Fig 3a and 3b
come from the same data.
"""

from __future__ import annotations

import json
import math
import os
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, NamedTuple

import numpy as np
from matplotlib import colormaps
from matplotlib.collections import LineCollection
from matplotlib.colors import Normalize
from matplotlib.figure import Figure
from matplotlib.lines import Line2D
from matplotlib.ticker import EngFormatter, MaxNLocator

__all__ = [
    "BeliefRollout",
    "EvalCurves",
    "load_eval_curves",
    "plot_belief_rollout",
    "plot_latents",
    "plot_learning_curves",
    "plot_per_episode_returns",
]

PathLike = str | os.PathLike
_FIG_SUFFIXES = (".png", ".pdf")
_PROB_CMAP = "viridis"


# ----------------------------------------------------------------------------------------------
# helpers
# ----------------------------------------------------------------------------------------------
def _to_numpy(value: Any, name: str, dtype: Any = float) -> np.ndarray:
    """Convert a tensor / array / nested list to a NumPy array, naming ``name`` on failure."""
    if hasattr(value, "detach"):  # torch.Tensor without importing torch
        value = value.detach().cpu().numpy()
    try:
        return np.asarray(value, dtype=dtype)
    except (TypeError, ValueError) as err:
        raise ValueError(f"{name} must be numeric array-like, got {type(value).__name__}") from err


def _stem_paths(path_stem: PathLike) -> list[Path]:
    """``figs/fig3a`` -> ``[figs/fig3a.png, figs/fig3a.pdf]`` (a trailing .png/.pdf is dropped)."""
    stem = Path(path_stem)
    if stem.suffix.lower() in _FIG_SUFFIXES:
        stem = stem.with_suffix("")
    # Append rather than with_suffix: stems such as "lr_0.5" keep their dot.
    return [stem.parent / f"{stem.name}{suffix}" for suffix in _FIG_SUFFIXES]


def _save(fig: Figure, path_stem: PathLike, dpi: int = 150) -> list[Path]:
    """Write ``fig`` as PNG and PDF next to each other and release it."""
    paths = _stem_paths(path_stem)
    paths[0].parent.mkdir(parents=True, exist_ok=True)
    try:
        for path in paths:
            fig.savefig(path, dpi=dpi)
    finally:
        fig.clf()
    return paths


def _flags(value: Any, name: str, length: int) -> np.ndarray:
    """A ``[length]`` bool array; a trailing singleton dim (TorchRL's ``[T, 1]``) is accepted."""
    arr = _to_numpy(value, name, dtype=bool)
    if arr.ndim == 2 and arr.shape[1] == 1:
        arr = arr[:, 0]
    if arr.shape != (length,):
        raise ValueError(f"{name} must have shape [{length}] (T+1,), got {tuple(arr.shape)}")
    return arr


def _probs(value: Any, name: str, steps: int, grid_size: int) -> np.ndarray:
    """A ``[steps, grid_size, grid_size]`` array indexed ``[t, x, y]`` from flat or square input."""
    arr = _to_numpy(value, name)
    cells = grid_size * grid_size
    if arr.ndim == 3 and arr.shape[1:] == (grid_size, grid_size):
        arr = arr.reshape(arr.shape[0], cells)
    if arr.ndim != 2 or arr.shape != (steps, cells):
        raise ValueError(
            f"{name} must have shape [T+1, grid_size*grid_size] = [{steps}, {cells}] "
            f"(flat index x * grid_size + y), got {tuple(arr.shape)}"
        )
    return arr.reshape(steps, grid_size, grid_size)


def _series(value: Any, name: str) -> np.ndarray:
    arr = _to_numpy(value, name)
    if arr.ndim != 1 or arr.size == 0:
        raise ValueError(f"{name} must be a non-empty 1-D sequence, got shape {tuple(arr.shape)}")
    return arr


def _episode_rows(episode_done: np.ndarray) -> list[np.ndarray]:
    """Split steps ``0..T`` into one row per inner episode (see :func:`plot_belief_rollout`)."""
    last = len(episode_done) - 1
    starts = [0] + [t for t in range(1, last) if episode_done[t]]
    ends = starts[1:] + [last + 1]
    return [np.arange(s, e) for s, e in zip(starts, ends, strict=True)]


# ----------------------------------------------------------------------------------------------
# Fig 3a: belief rollout
# ----------------------------------------------------------------------------------------------
def _draw_belief_mosaic(
    ax: Any,
    probs: np.ndarray,
    positions: np.ndarray,
    goal: np.ndarray | None,
    rows: list[np.ndarray],
    grid_size: int,
    norm: Normalize,
    panel_in: float,
) -> Any:
    """Draw one panel per step as tiles of a single Axes (fast even for 60+ panels)."""
    g = grid_size
    gap = max(0.6, 0.25 * g)
    pitch = g + gap
    ncols = max(len(r) for r in rows)
    image = None
    grid_segments: list[list[tuple[float, float]]] = []
    path_x: list[float] = []
    path_y: list[float] = []
    cur_x: list[float] = []
    cur_y: list[float] = []
    goal_x: list[float] = []
    goal_y: list[float] = []
    for r, steps in enumerate(rows):
        y0 = -r * pitch - g
        for c, t in enumerate(steps):
            x0 = c * pitch
            # probs[t] is [x, y]; imshow wants [row=y, col=x] with origin lower.
            image = ax.imshow(
                probs[t].T,
                cmap=_PROB_CMAP,
                norm=norm,
                origin="lower",
                extent=(x0, x0 + g, y0, y0 + g),
                interpolation="nearest",
            )
            for k in range(g + 1):
                grid_segments.append([(x0 + k, y0), (x0 + k, y0 + g)])
                grid_segments.append([(x0, y0 + k), (x0 + g, y0 + k)])
            trail = positions[steps[0] : t + 1]
            path_x.extend((x0 + trail[:, 0] + 0.5).tolist() + [np.nan])
            path_y.extend((y0 + trail[:, 1] + 0.5).tolist() + [np.nan])
            cur_x.append(x0 + positions[t, 0] + 0.5)
            cur_y.append(y0 + positions[t, 1] + 0.5)
            if goal is not None:
                goal_x.append(x0 + goal[0] + 0.5)
                goal_y.append(y0 + goal[1] + 0.5)
    ax.add_collection(LineCollection(grid_segments, colors="0.6", linewidths=0.3, zorder=2))
    ax.plot(path_x, path_y, color="white", lw=1.6, zorder=3, solid_capstyle="round")
    ax.plot(path_x, path_y, color="tab:red", lw=0.8, zorder=4, solid_capstyle="round")
    cell_pt = panel_in * 72.0 / g  # one cell, in points
    per_pt = g / (panel_in * 72.0)  # data units per point
    if goal is not None:
        ax.scatter(
            goal_x,
            goal_y,
            marker="*",
            s=min(0.95 * cell_pt, 6.0 + 0.3 * cell_pt) ** 2,
            c="gold",
            edgecolors="k",
            linewidths=0.4,
            zorder=5,
        )
    ax.scatter(
        cur_x,
        cur_y,
        marker="o",
        s=min(0.55 * cell_pt, 3.5 + 0.2 * cell_pt) ** 2,
        c="tab:red",
        edgecolors="white",
        linewidths=0.5,
        zorder=6,
    )
    # Labels: step-in-episode above the columns, episode number left of the rows.
    label_size = 7 if ncols <= 20 else 6
    for c in range(ncols):
        ax.text(c * pitch + g / 2, gap * 0.3, str(c), ha="center", va="bottom", fontsize=label_size)
    for r in range(len(rows)):
        ax.text(
            -gap * 0.5,
            -r * pitch - g / 2,
            f"ep {r + 1}",
            ha="right",
            va="center",
            fontsize=label_size + 1,
            rotation=0,
        )
    ax.set_xlim(-gap * 0.5 - 3.2 * (label_size + 1) * per_pt, ncols * pitch - gap + 0.1)
    ax.set_ylim(-(len(rows) - 1) * pitch - g - 0.1, gap * 0.3 + 1.4 * label_size * per_pt)
    ax.set_aspect("equal")
    ax.set_axis_off()
    return image


def plot_belief_rollout(
    positions: Any,
    reward_probs: Any,
    goal: Any,
    episode_done: Any,
    path_stem: PathLike,
    exact_probs: Any = None,
    grid_size: int = 5,
    max_steps: int | None = None,
    title: str | None = None,
    labels: tuple[str, str] = ("VariBAD decoder", "exact posterior"),
) -> list[Path]:
    """Draw the GridNavi belief at every step of one test task ("Fig 3a" of VariBAD).

    One small grid per step: the background is the probability that the goal is in each cell
    (colour scale fixed to 0..1, with a colorbar), the red line is the agent's path so far in
    the current inner episode, the red dot its current cell and the gold star the true goal.
    Panels are laid out one row per inner episode ("ep 1", "ep 2", ...), one column per step
    within the episode (numbered on top). Row ``e`` holds the steps at which the agent acts in
    episode ``e``: it starts at the step whose observation is the start state (``t = 0``, or
    the step of the previous episode's ``episode_done``, since
    :class:`~torchrl_bamdp.envs.bamdp.BAMDPEnv` returns the start state there) and ends just
    before the next ``episode_done``; the final step ``T`` closes the last row (at the end of
    the task ``BAMDPEnv`` does not reset, so ``positions[T]`` is the true last cell). Each panel
    thus shows the belief the policy conditions on together with the cell it is in.

    Parameters
    ----------
    positions : array-like
        ``[T+1, 2]`` integer cell ``(x, y)`` observed at each step (``t = 0`` is the start).
    reward_probs : array-like
        ``[T+1, grid_size*grid_size]`` the decoder's probability that the goal is at each cell,
        for the belief at each step (flat index ``x * grid_size + y``); ``[T+1, grid_size,
        grid_size]`` indexed ``[t, x, y]`` is accepted too.
    goal : array-like or None
        ``(x, y)`` of the true goal (``None``: not drawn).
    episode_done : array-like
        ``[T+1]`` (or ``[T+1, 1]``) bool, ``True`` at steps where an inner episode ended.
    path_stem : str or os.PathLike
        Output path without suffix; ``<path_stem>.png`` and ``<path_stem>.pdf`` are written.
    exact_probs : array-like, optional
        Same shape as ``reward_probs``: the exact Bayes posterior. When given, a second set of
        rows ("exact posterior") is drawn below the decoder's ("VariBAD decoder").
    grid_size : int
        Side of the grid.
    labels : tuple of str
        Titles of the two row sets (``reward_probs``, ``exact_probs``), e.g. to plot another
        belief than VariBAD's.
    max_steps : int, optional
        Only draw steps ``0..max_steps``. If step ``max_steps`` is an ``episode_done`` step
        other than the last one given, it is dropped too: its observation is already the start
        state of the next episode, which is not drawn.
    title : str, optional
        Figure title.

    Returns
    -------
    list of pathlib.Path
        The PNG and PDF paths written.

    Raises
    ------
    ValueError
        If an argument has the wrong shape or holds cells outside the grid.

    Examples
    --------
    >>> import numpy as np
    >>> pos = np.array([[0, 0], [1, 0], [1, 1], [0, 0], [0, 1], [1, 1]])
    >>> probs = np.full((6, 9), 1 / 9)
    >>> done = np.array([0, 0, 0, 1, 0, 1], dtype=bool)
    >>> paths = plot_belief_rollout(pos, probs, (2, 2), done, "/tmp/doc_fig3a", grid_size=3)
    >>> [p.name for p in paths]
    ['doc_fig3a.png', 'doc_fig3a.pdf']
    """
    if not isinstance(grid_size, int) or isinstance(grid_size, bool) or grid_size < 1:
        raise ValueError(f"grid_size must be a positive int, got {grid_size!r}")
    pos = _to_numpy(positions, "positions")
    if pos.ndim != 2 or pos.shape[1] != 2 or pos.shape[0] == 0:
        raise ValueError(f"positions must have shape [T+1, 2] (cell x, y), got {tuple(pos.shape)}")
    steps = pos.shape[0]
    if np.any(pos != np.round(pos)) or np.any(pos < 0) or np.any(pos >= grid_size):
        raise ValueError(f"positions must be integer cells in 0..{grid_size - 1}")
    pos = pos.astype(int)
    probs = _probs(reward_probs, "reward_probs", steps, grid_size)
    exact = None if exact_probs is None else _probs(exact_probs, "exact_probs", steps, grid_size)
    done = _flags(episode_done, "episode_done", steps)
    goal_xy = None
    if goal is not None:
        goal_xy = _to_numpy(goal, "goal").reshape(-1)
        if goal_xy.shape != (2,):
            raise ValueError(f"goal must be a cell (x, y) of shape [2], got {goal_xy.shape}")
    if max_steps is not None:
        if not isinstance(max_steps, int) or max_steps < 0:
            raise ValueError(f"max_steps must be a non-negative int, got {max_steps!r}")
        keep = min(steps, max_steps + 1)
        if keep < steps and keep > 1 and done[keep - 1]:
            # That step's observation is already the next episode's start state.
            keep -= 1
        pos, probs, done = pos[:keep], probs[:keep], done[:keep]
        exact = None if exact is None else exact[:keep]

    rows = _episode_rows(done)
    ncols = max(len(r) for r in rows)
    sets = [(labels[0], probs)] + ([] if exact is None else [(labels[1], exact)])
    panel_in = min(1.1, max(0.42, 9.0 / ncols))
    width = ncols * panel_in * 1.25 + 2.0
    set_heights = [len(rows) * panel_in * 1.25 + 0.45 for _ in sets]
    height = sum(set_heights) + (0.5 if title else 0.2) + 0.35
    fig = Figure(figsize=(width, height), layout="constrained")
    axes = fig.subplots(len(sets), 1, squeeze=False, height_ratios=set_heights)[:, 0]
    norm = Normalize(vmin=0.0, vmax=1.0)
    image = None
    for ax, (label, p) in zip(axes, sets, strict=True):
        image = _draw_belief_mosaic(
            ax, np.clip(p, 0.0, 1.0), pos, goal_xy, rows, grid_size, norm, panel_in
        )
        ax.set_title(label, fontsize=10, loc="left")
    fig.colorbar(
        image,
        ax=list(axes),
        shrink=min(0.9, 2.5 / sum(set_heights) + 0.4),
        pad=0.01,
        label="p(goal in cell)",
        fraction=0.03,
    )
    handles = [
        Line2D([], [], color="tab:red", lw=1, marker="o", ms=4, label="path / current cell"),
        Line2D([], [], color="gold", lw=0, marker="*", ms=8, mec="k", mew=0.4, label="goal"),
    ]
    fig.legend(handles=handles, loc="outside lower center", ncols=2, fontsize=8, frameon=False)
    if title:
        fig.suptitle(title)
    return _save(fig, path_stem)


# ----------------------------------------------------------------------------------------------
# Fig 3b: latents
# ----------------------------------------------------------------------------------------------
def plot_latents(
    mean: Any,
    logvar: Any,
    episode_done: Any,
    path_stem: PathLike,
    title: str | None = None,
) -> list[Path]:
    """Plot the posterior's mean and log-variance per latent dimension over time ("Fig 3b").

    Two panels share the step axis: one thin coloured line per latent dimension, the mean over
    dimensions as a thick black line, and dashed vertical lines where inner episodes end.

    Parameters
    ----------
    mean, logvar : array-like
        ``[T+1, latent_dim]`` posterior parameters at each step (``t = 0`` is the prior); a 1-D
        ``[T+1]`` input is read as ``latent_dim = 1``.
    episode_done : array-like
        ``[T+1]`` (or ``[T+1, 1]``) bool, ``True`` at steps where an inner episode ended.
    path_stem : str or os.PathLike
        Output path without suffix; ``.png`` and ``.pdf`` are written.
    title : str, optional
        Figure title.

    Returns
    -------
    list of pathlib.Path
        The PNG and PDF paths written.

    Raises
    ------
    ValueError
        If ``mean``/``logvar`` are not ``[T+1, latent_dim]`` of the same shape, or
        ``episode_done`` is not ``[T+1]``.

    Examples
    --------
    >>> import numpy as np
    >>> mu, lv = np.zeros((31, 5)), -np.linspace(0, 3, 31)[:, None].repeat(5, 1)
    >>> done = np.zeros(31, dtype=bool); done[[15, 30]] = True
    >>> [p.suffix for p in plot_latents(mu, lv, done, "/tmp/doc_fig3b")]
    ['.png', '.pdf']
    """
    mu = _to_numpy(mean, "mean")
    lv = _to_numpy(logvar, "logvar")
    if mu.ndim == 1:
        mu = mu[:, None]
    if lv.ndim == 1:
        lv = lv[:, None]
    if mu.ndim != 2 or mu.shape[0] == 0 or mu.shape[1] == 0:
        raise ValueError(f"mean must have shape [T+1, latent_dim], got {tuple(mu.shape)}")
    if lv.shape != mu.shape:
        raise ValueError(
            f"logvar must have the shape of mean [T+1, latent_dim] = {list(mu.shape)}, "
            f"got {list(lv.shape)}"
        )
    steps, dim = mu.shape
    done = _flags(episode_done, "episode_done", steps)
    t = np.arange(steps)
    fig = Figure(figsize=(6.4, 5.0), layout="constrained")
    axes = fig.subplots(2, 1, sharex=True)
    cmap = colormaps["tab10" if dim <= 10 else "viridis"]
    for ax, values, label in ((axes[0], mu, "latent mean"), (axes[1], lv, "latent log-variance")):
        for d in range(dim):
            color = cmap(d % 10) if dim <= 10 else cmap(d / max(1, dim - 1))
            ax.plot(t, values[:, d], lw=0.8, alpha=0.75, color=color)
        ax.plot(t, values.mean(1), lw=2.5, color="k", label=f"mean over {dim} dims")
        for boundary in np.flatnonzero(done[: steps - 1]):
            ax.axvline(boundary, color="0.4", ls="--", lw=0.9)
        ax.set_ylabel(label)
        ax.grid(alpha=0.3)
        ax.set_xlim(0, max(1, steps - 1))
    axes[0].legend(loc="best", fontsize=8)
    axes[1].set_xlabel("environment step")
    axes[1].xaxis.set_major_locator(MaxNLocator(integer=True))
    if title:
        fig.suptitle(title)
    return _save(fig, path_stem)


# ----------------------------------------------------------------------------------------------
# Fig 4: per-episode returns, learning curves
# ----------------------------------------------------------------------------------------------
def _reference_style(i: int) -> dict[str, Any]:
    colors = ("k", "0.45", "tab:brown", "tab:pink", "tab:olive")
    styles = ("--", ":", "-.", (0, (5, 2, 1, 2)), (0, (1, 1)))
    return {"color": colors[i % len(colors)], "ls": styles[i % len(styles)], "lw": 1.4}


def plot_per_episode_returns(
    results: Mapping[str, tuple[Any, Any]],
    path_stem: PathLike,
    references: Mapping[str, Any] | None = None,
    title: str | None = None,
    ylabel: str = "return",
) -> list[Path]:
    """Plot the meta-test return per inner-episode index for several algorithms ("Fig 4").

    Parameters
    ----------
    results : Mapping[str, tuple]
        ``algo name -> (mean, stderr)``, each a sequence over episodes ``1..k``; a ``NaN``
        stderr draws no error bar at that episode.
    path_stem : str or os.PathLike
        Output path without suffix; ``.png`` and ``.pdf`` are written.
    references : Mapping[str, sequence or float], optional
        ``label -> per-episode values`` drawn as dashed lines (e.g. ``"Bayes-optimal"``,
        ``"oracle"``); a single float draws a horizontal line.
    title : str, optional
        Axes title.
    ylabel : str
        Y-axis label.

    Returns
    -------
    list of pathlib.Path
        The PNG and PDF paths written.

    Raises
    ------
    ValueError
        If ``results`` is empty or a mean/stderr pair is not two 1-D sequences of equal length.

    Examples
    --------
    >>> res = {"VariBAD": ([0.5, 4.0], [0.2, 0.1]), "RL2": ([0.1, 2.0], [float("nan")] * 2)}
    >>> refs = {"Bayes-optimal": [1.2, 4.3], "oracle": 4.5}
    >>> len(plot_per_episode_returns(res, "/tmp/doc_fig4", references=refs))
    2
    """
    if not isinstance(results, Mapping) or len(results) == 0:
        raise ValueError("results must be a non-empty mapping algo -> (mean, stderr)")
    fig = Figure(figsize=(5.6, 4.0), layout="constrained")
    ax = fig.subplots()
    k_max = 1
    for name, value in results.items():
        if not hasattr(value, "__len__") or len(value) != 2:
            raise ValueError(f"results[{name!r}] must be a pair (mean, stderr)")
        m = _series(value[0], f"results[{name!r}] mean")
        s = _series(value[1], f"results[{name!r}] stderr")
        if s.shape != m.shape:
            raise ValueError(
                f"results[{name!r}] stderr must have the shape of its mean [{m.size}], "
                f"got [{s.size}]"
            )
        x = np.arange(1, m.size + 1)
        k_max = max(k_max, m.size)
        (line,) = ax.plot(x, m, marker="o", lw=1.8, ms=5, label=name, zorder=3)
        ok = np.isfinite(s)
        if ok.any():
            ax.errorbar(
                x[ok],
                m[ok],
                yerr=s[ok],
                fmt="none",
                ecolor=line.get_color(),
                capsize=3,
                lw=1.2,
                zorder=3,
            )
            ax.fill_between(
                x,
                m - np.where(ok, s, 0.0),
                m + np.where(ok, s, 0.0),
                color=line.get_color(),
                alpha=0.15,
                lw=0,
            )
    for i, (label, ref) in enumerate((references or {}).items()):
        style = _reference_style(i)
        arr = _to_numpy(ref, f"references[{label!r}]")
        if arr.ndim == 0:
            ax.axhline(float(arr), label=label, **style)
        elif arr.ndim == 1 and arr.size > 0:
            k_max = max(k_max, arr.size)
            ax.plot(np.arange(1, arr.size + 1), arr, label=label, **style)
        else:
            raise ValueError(
                f"references[{label!r}] must be a float or a 1-D per-episode sequence, "
                f"got shape {tuple(arr.shape)}"
            )
    ax.set_xticks(np.arange(1, k_max + 1))
    ax.set_xlim(0.75, k_max + 0.25)
    ax.set_xlabel("episode")
    ax.set_ylabel(ylabel)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8, loc="best")
    if title:
        ax.set_title(title)
    return _save(fig, path_stem)


def plot_learning_curves(
    curves: Mapping[str, tuple[Any, ...]],
    path_stem: PathLike,
    references: Mapping[str, float] | None = None,
    title: str | None = None,
    ylabel: str = "test return (sum over episodes)",
) -> list[Path]:
    """Plot test return against training frames, mean line with a shaded +-1 s.e. band.

    Parameters
    ----------
    curves : Mapping[str, tuple]
        ``algo name -> (frames, mean, stderr)`` (``stderr`` may be ``None``, or ``NaN`` where
        unknown; a pair ``(frames, mean)`` is accepted too). Typically from
        :func:`load_eval_curves`.
    path_stem : str or os.PathLike
        Output path without suffix; ``.png`` and ``.pdf`` are written.
    references : Mapping[str, float], optional
        ``label -> value`` drawn as horizontal dashed lines (e.g. the Bayes-optimal return).
    title : str, optional
        Axes title.
    ylabel : str
        Y-axis label.

    Returns
    -------
    list of pathlib.Path
        The PNG and PDF paths written.

    Raises
    ------
    ValueError
        If ``curves`` is empty or a curve's sequences are not 1-D of equal length.

    Examples
    --------
    >>> frames = [0, 1000, 2000, 3000]
    >>> curves = {"VariBAD": (frames, [-6.0, 2.0, 8.0, 10.0], [0.5, 0.4, 0.3, 0.2])}
    >>> paths = plot_learning_curves(curves, "/tmp/doc_curves", references={"Bayes-opt": 11.0})
    >>> paths[0].name
    'doc_curves.png'
    """
    if not isinstance(curves, Mapping) or len(curves) == 0:
        raise ValueError("curves must be a non-empty mapping algo -> (frames, mean, stderr)")
    fig = Figure(figsize=(6.0, 4.0), layout="constrained")
    ax = fig.subplots()
    for name, value in curves.items():
        if not hasattr(value, "__len__") or len(value) not in (2, 3):
            raise ValueError(f"curves[{name!r}] must be (frames, mean, stderr) or (frames, mean)")
        frames = _series(value[0], f"curves[{name!r}] frames")
        m = _series(value[1], f"curves[{name!r}] mean")
        if m.shape != frames.shape:
            raise ValueError(
                f"curves[{name!r}] mean must have the shape of its frames [{frames.size}], "
                f"got [{m.size}]"
            )
        stderr = value[2] if len(value) == 3 else None
        (line,) = ax.plot(frames, m, lw=1.8, label=name, marker="o" if m.size <= 12 else None)
        if stderr is not None:
            s = _series(stderr, f"curves[{name!r}] stderr")
            if s.shape != m.shape:
                raise ValueError(
                    f"curves[{name!r}] stderr must have the shape of its mean [{m.size}], "
                    f"got [{s.size}]"
                )
            ok = np.isfinite(s)
            if ok.any():
                ax.fill_between(
                    frames,
                    m - s,
                    m + s,
                    where=ok,
                    color=line.get_color(),
                    alpha=0.2,
                    lw=0,
                    interpolate=False,
                )
    for i, (label, ref) in enumerate((references or {}).items()):
        arr = _to_numpy(ref, f"references[{label!r}]")
        if arr.ndim != 0:
            raise ValueError(f"references[{label!r}] must be a float, got shape {arr.shape}")
        ax.axhline(float(arr), label=label, **_reference_style(i))
    ax.xaxis.set_major_formatter(EngFormatter(sep=""))
    ax.set_xlabel("frames")
    ax.set_ylabel(ylabel)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8, loc="best")
    if title:
        ax.set_title(title)
    return _save(fig, path_stem)


# ----------------------------------------------------------------------------------------------
# eval.jsonl -> learning curve over seeds
# ----------------------------------------------------------------------------------------------
class EvalCurves(NamedTuple):
    """Learning curve over training runs (a plain 3-tuple, unpackable as such).

    Attributes
    ----------
    frames : numpy.ndarray
        ``[n]`` training frames of the evaluations (ascending).
    mean : numpy.ndarray
        ``[n]`` mean over runs of each evaluation's ``total_mean``.
    stderr : numpy.ndarray
        ``[n]`` standard error over runs (``std(ddof=1) / sqrt(runs)``; ``NaN`` with one run).

    Examples
    --------
    >>> c = EvalCurves(np.array([0, 10]), np.array([1.0, 2.0]), np.array([np.nan, np.nan]))
    >>> frames, mean, stderr = c
    >>> int(c.frames[-1])
    10
    """

    frames: np.ndarray
    mean: np.ndarray
    stderr: np.ndarray


def _read_eval_jsonl(run_dir: Path) -> dict[float, float]:
    """``frames -> total_mean`` of one run; torn/invalid lines skipped, the last entry wins."""
    path = run_dir / "eval.jsonl"
    if not path.is_file():
        raise FileNotFoundError(f"no eval.jsonl in run dir {run_dir}")
    points: dict[float, float] = {}
    for line in path.read_text().splitlines():
        line = line.strip()
        if not line:
            continue
        try:
            entry = json.loads(line)
            frames, total = float(entry["frames"]), float(entry["total_mean"])
        except (json.JSONDecodeError, KeyError, TypeError, ValueError):
            continue  # a line torn by a kill, or not an evaluation record
        if math.isfinite(frames):
            points[frames] = total  # a resumed run may re-evaluate a frame count: keep the last
    if not points:
        raise ValueError(f"run_dirs: {path} holds no valid evaluation line")
    return points


def load_eval_curves(run_dirs: PathLike | Iterable[PathLike]) -> EvalCurves:
    """Average the ``total_mean`` learning curves of several runs (seeds) of one algorithm.

    Each run directory holds ``eval.jsonl``: one JSON object per line with keys ``iteration``,
    ``frames``, ``total_mean``, ``mean``, ``stderr``, ``num_tasks``, ``episodes``. Lines that
    are not valid JSON (torn by a kill) or lack ``frames``/``total_mean`` are skipped; when a
    frame count appears twice in a run (a resumed run) the last line wins.

    Grid choice: the curves are aligned on the frame counts present in **every** run (runs of
    one algorithm share the evaluation schedule; a run stopped early limits the curve to its
    frames). Only if the runs share no frame count at all are the curves linearly interpolated
    onto the frames of the run with the fewest evaluations, restricted to the range covered by
    all runs.

    Parameters
    ----------
    run_dirs : path or iterable of paths
        The runs' directories (a single path is one run).

    Returns
    -------
    EvalCurves
        ``(frames, mean, stderr)`` NumPy arrays; ``stderr`` is ``std(ddof=1) / sqrt(runs)``
        over runs, ``NaN`` with one run.

    Raises
    ------
    FileNotFoundError
        If a run directory has no ``eval.jsonl``.
    ValueError
        If ``run_dirs`` is empty, a run has no valid line, or the runs share no frame range.

    Examples
    --------
    >>> import tempfile, pathlib
    >>> d = pathlib.Path(tempfile.mkdtemp())
    >>> _ = (d / "eval.jsonl").write_text('{"frames": 0, "total_mean": -6.0}\\n{"fram')
    >>> load_eval_curves([d]).mean.tolist()
    [-6.0]
    """
    if isinstance(run_dirs, str | os.PathLike):
        run_dirs = [run_dirs]
    dirs = [Path(d) for d in run_dirs]
    if not dirs:
        raise ValueError("run_dirs must name at least one run directory")
    runs = [_read_eval_jsonl(d) for d in dirs]
    common = sorted(set.intersection(*(set(r) for r in runs)))
    if common:
        frames = np.asarray(common, dtype=float)
        values = np.array([[r[f] for f in common] for r in runs])
    else:
        lo = max(min(r) for r in runs)
        hi = min(max(r) for r in runs)
        shortest = min(runs, key=len)
        frames = np.array(sorted(f for f in shortest if lo <= f <= hi), dtype=float)
        if frames.size == 0:
            raise ValueError("run_dirs: the runs' evaluation frames do not overlap")
        values = np.array([np.interp(frames, sorted(r), [r[f] for f in sorted(r)]) for r in runs])
    if np.all(frames == np.round(frames)):
        frames = frames.astype(np.int64)
    mean = values.mean(0)
    if len(runs) > 1:
        stderr = values.std(0, ddof=1) / math.sqrt(len(runs))
    else:
        stderr = np.full_like(mean, np.nan)
    return EvalCurves(frames, mean, stderr)


# ----------------------------------------------------------------------------------------------
# data container
# ----------------------------------------------------------------------------------------------
@dataclass
class BeliefRollout:
    """The arrays of one recorded test rollout on one task, for Fig 3a and Fig 3b.

    Attributes
    ----------
    positions : array-like
        ``[T+1, 2]`` observed cell at each step.
    reward_probs : array-like
        ``[T+1, grid_size**2]`` decoder's goal probability per cell (index ``x * grid_size + y``).
    goal : array-like
        ``(x, y)`` true goal.
    episode_done : array-like
        ``[T+1]`` inner-episode ends.
    mean, logvar : array-like, optional
        ``[T+1, latent_dim]`` posterior parameters (needed by :meth:`plot_latents`).
    exact_probs : array-like, optional
        ``[T+1, grid_size**2]`` exact Bayes posterior, drawn for comparison.
    grid_size : int
        Side of the grid.

    Examples
    --------
    >>> import numpy as np
    >>> ro = BeliefRollout(
    ...     positions=np.zeros((4, 2), dtype=int), reward_probs=np.full((4, 9), 1 / 9),
    ...     goal=(2, 2), episode_done=np.array([0, 0, 1, 1], bool),
    ...     mean=np.zeros((4, 2)), logvar=np.zeros((4, 2)), grid_size=3)
    >>> len(ro.plot_belief("/tmp/doc_ro_3a")), len(ro.plot_latents("/tmp/doc_ro_3b"))
    (2, 2)
    """

    positions: Any
    reward_probs: Any
    goal: Any
    episode_done: Any
    mean: Any = None
    logvar: Any = None
    exact_probs: Any = None
    grid_size: int = 5

    def plot_belief(self, path_stem: PathLike, **kwargs: Any) -> list[Path]:
        """Fig 3a of this rollout (keyword arguments go to :func:`plot_belief_rollout`)."""
        return plot_belief_rollout(
            self.positions,
            self.reward_probs,
            self.goal,
            self.episode_done,
            path_stem,
            exact_probs=self.exact_probs,
            grid_size=self.grid_size,
            **kwargs,
        )

    def plot_latents(self, path_stem: PathLike, **kwargs: Any) -> list[Path]:
        """Fig 3b of this rollout (keyword arguments go to :func:`plot_latents`)."""
        if self.mean is None or self.logvar is None:
            raise ValueError("mean and logvar must be set to plot the latents")
        return plot_latents(self.mean, self.logvar, self.episode_done, path_stem, **kwargs)
