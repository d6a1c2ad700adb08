"""Image observations of the pure-torch task families, rendered batched on the env's device.

A family with ``observation="pixels"`` observes a ``3 x S x S`` ``uint8`` frame of the agent's
position instead of the position itself (``S = image_size``, 32 by default). The frame shows
the agent only: never the goal, which the state version does not observe either, so the task
distribution, the rewards and the Bayes-optimal returns are those of the state version.

Every renderer here is a pure function of the positions: one batch of comparisons against
precomputed pixel grids, no Python loop over envs, no host sync (``TaskEnv.sync_free``). Each
also reads its frames back (:meth:`GridRenderer.positions`, :meth:`PointRenderer.positions`),
the exact inverse on frames it rendered; the tests check both directions, and the figures and
GridNavi's per-cell reward decoder use the inverse to know which cell a frame shows.

Colours: the agent is drawn in :data:`AGENT_COLOUR` (full intensity in channel 0, which is what
"lit" means below), GridNavi's cell borders in :data:`GRID_LINE_VALUE` in every channel, the
rest is black.
"""

from __future__ import annotations

import torch

# The values of a family's ``observation`` option and the default frame side are the config's
# (defined where the config schema reads them without importing torch).
from torchrl_bamdp.registry import DEFAULT_IMAGE_SIZE, OBSERVATIONS

__all__ = [
    "AGENT_COLOUR",
    "DEFAULT_IMAGE_SIZE",
    "DEFAULT_VIEW_RADIUS",
    "GRID_LINE_VALUE",
    "OBSERVATIONS",
    "GridRenderer",
    "PointRenderer",
    "check_observation",
    "image_shape",
]
#: RGB of the agent; channel 0 is at full intensity exactly where the agent is.
AGENT_COLOUR = (255, 160, 0)
#: Grey level of GridNavi's cell borders (below the agent's channel-0 intensity: never "lit").
GRID_LINE_VALUE = 64
#: Half the side of the square of the plane the point robot's frames show, centred on the start.
DEFAULT_VIEW_RADIUS = 1.5


def check_observation(owner: str, observation: str, image_size: int) -> None:
    """Raise a ``ValueError`` naming ``owner`` unless ``observation`` is one of
    :data:`OBSERVATIONS` and ``image_size`` an int >= 8.

    Examples
    --------
    >>> check_observation("GridNaviEnv", "pixels", 32)
    >>> try:
    ...     check_observation("GridNaviEnv", "rgb", 32)
    ... except ValueError as err:
    ...     print(err)
    GridNaviEnv: observation must be one of ['state', 'pixels'] (got 'rgb')
    """
    if observation not in OBSERVATIONS:
        raise ValueError(
            f"{owner}: observation must be one of {list(OBSERVATIONS)} (got {observation!r})"
        )
    if isinstance(image_size, bool) or not isinstance(image_size, int) or image_size < 8:
        raise ValueError(f"{owner}: image_size must be an int >= 8 (got {image_size!r})")


def image_shape(spec_shape: torch.Size, batch_dims: int) -> tuple[int, ...] | None:
    """``(C, H, W)`` when an observation spec of shape ``spec_shape`` (batch dims first) holds
    images, ``None`` for a state vector: what generic code reads instead of an env's name.

    Examples
    --------
    >>> image_shape(torch.Size([16, 3, 32, 32]), 1), image_shape(torch.Size([16, 2]), 1)
    ((3, 32, 32), None)
    """
    shape = tuple(spec_shape[batch_dims:])
    return shape if len(shape) == 3 else None


class GridRenderer:
    """GridNavi frames: the grid's cell borders, and the agent's cell filled in.

    The ``grid_size x grid_size`` cells are squares of ``cell = image_size // grid_size``
    pixels (their top and left borders drawn, and the closing border of the last row and
    column), centred in the frame; cell ``(x, y)`` is column ``x`` from the left and row ``y``
    from the *bottom* (so "up" moves up in the image). The agent fills the inside of its cell
    (``(cell - 1)^2`` pixels).

    Parameters
    ----------
    grid_size : int
        Side of the grid.
    image_size : int
        Side of the frame; at least ``2 * grid_size`` (a border and one pixel inside per cell).

    Examples
    --------
    >>> renderer = GridRenderer(grid_size=5, image_size=32)
    >>> frames = renderer.render(torch.tensor([[0, 0], [4, 2]]))
    >>> frames.shape, frames.dtype
    (torch.Size([2, 3, 32, 32]), torch.uint8)
    >>> renderer.positions(frames).tolist()
    [[0, 0], [4, 2]]
    >>> int((frames[0, 0] == 255).sum())  # the inside of one 6-pixel cell
    25
    """

    def __init__(self, grid_size: int, image_size: int = DEFAULT_IMAGE_SIZE) -> None:
        cell = image_size // grid_size
        if cell < 2:
            raise ValueError(
                f"GridRenderer: image_size ({image_size}) must be >= 2 * grid_size "
                f"({2 * grid_size}): each cell needs a border and at least one pixel inside"
            )
        self.grid_size = grid_size
        self.image_size = image_size
        self.cell = cell
        self.margin = (image_size - cell * grid_size) // 2
        offset = torch.arange(image_size) - self.margin
        inside = (offset >= 0) & (offset < cell * grid_size) & (offset % cell != 0)
        index = offset.div(cell, rounding_mode="floor").clamp(0, grid_size - 1)
        col_x = torch.where(inside, index, -1)  # x of each column's cell (-1: border, margin)
        row_y = torch.where(inside, grid_size - 1 - index, -1)  # y of each row's cell
        # Flat cell index x * grid_size + y of every pixel inside a cell, -1 elsewhere.
        interior = (row_y[:, None] >= 0) & (col_x[None, :] >= 0)
        self._pixel_cell = torch.where(
            interior, col_x[None, :] * grid_size + row_y[:, None], -1
        )  # [S, S]
        line = (offset >= 0) & (offset <= cell * grid_size) & (offset % cell == 0)
        span = (offset >= 0) & (offset <= cell * grid_size)
        border = (line[:, None] & span[None, :]) | (span[:, None] & line[None, :])
        background = torch.where(border, GRID_LINE_VALUE, 0).to(torch.uint8)
        self._background = background.expand(3, image_size, image_size).clone()
        self._colour = torch.tensor(AGENT_COLOUR, dtype=torch.uint8).reshape(3, 1, 1)
        # The pixel at the centre of each cell, in flat cell order: what positions() reads.
        xs = torch.arange(grid_size).repeat_interleave(grid_size)
        ys = torch.arange(grid_size).repeat(grid_size)
        self._centre_col = self.margin + xs * cell + cell // 2
        self._centre_row = self.margin + (grid_size - 1 - ys) * cell + cell // 2
        self._on: dict[torch.device, tuple[torch.Tensor, ...]] = {}

    def _tensors(self, device: torch.device) -> tuple[torch.Tensor, ...]:
        # Copied to a device once, then reused: no transfer on the step path.
        if device not in self._on:
            self._on[device] = tuple(
                t.to(device)
                for t in (
                    self._pixel_cell,
                    self._background,
                    self._colour,
                    self._centre_row,
                    self._centre_col,
                )
            )
        return self._on[device]

    @property
    def shape(self) -> tuple[int, int, int]:
        """``(3, image_size, image_size)``."""
        return (3, self.image_size, self.image_size)

    def render(self, position: torch.Tensor) -> torch.Tensor:
        """Frames ``[..., 3, S, S]`` (``uint8``) of integer cells ``position`` ``[..., 2]``."""
        pixel_cell, background, colour, _, _ = self._tensors(position.device)
        position = position.long()
        cell = position[..., 0] * self.grid_size + position[..., 1]
        lit = pixel_cell == cell[..., None, None]  # [..., S, S]
        return torch.where(lit.unsqueeze(-3), colour, background)

    def cells(self, frames: torch.Tensor) -> torch.Tensor:
        """The flat cell index ``x * grid_size + y`` each frame ``[..., 3, S, S]`` shows the
        agent in (the lit cell centre; exact on rendered frames)."""
        _, _, _, rows, cols = self._tensors(frames.device)
        return frames[..., 0, rows, cols].argmax(-1)

    def positions(self, frames: torch.Tensor) -> torch.Tensor:
        """The cells ``[..., 2]`` (long ``x, y``) the frames show the agent in."""
        cell = self.cells(frames)
        return torch.stack([cell // self.grid_size, cell % self.grid_size], dim=-1)


class PointRenderer:
    """Point-robot frames: the robot as a bilinear splat on a ``S x S`` view of the plane.

    The frame shows the square ``[-view_radius, view_radius]^2`` (pixel centres at
    ``-r + (j + 0.5) * 2r / S``; column ``j`` grows with x, row ``i`` with -y). The robot at
    continuous pixel coordinates ``(u, v)`` lights the (up to four) pixels around it with the
    bilinear weights ``(1 - |j - u|)^+ (1 - |i - v|)^+``, so the intensity-weighted centre of the
    lit pixels is ``(u, v)`` and sub-pixel motion is visible. A robot outside the view is drawn
    at its nearest point on the view's edge (clamped), so it is always in the frame.

    Parameters
    ----------
    image_size : int
        Side of the frame.
    view_radius : float
        Half the side of the square of the plane shown (the goals lie on the unit circle).

    Examples
    --------
    >>> renderer = PointRenderer(image_size=32, view_radius=1.5)
    >>> frames = renderer.render(torch.tensor([[0.0, 0.0], [0.3, 0.9]]))
    >>> frames.shape
    torch.Size([2, 3, 32, 32])
    >>> torch.allclose(renderer.positions(frames), torch.tensor([[0.0, 0.0], [0.3, 0.9]]),
    ...                atol=1e-2)
    True
    """

    def __init__(
        self, image_size: int = DEFAULT_IMAGE_SIZE, view_radius: float = DEFAULT_VIEW_RADIUS
    ) -> None:
        if not view_radius > 0:
            raise ValueError(f"PointRenderer: view_radius must be > 0 (got {view_radius})")
        self.image_size = image_size
        self.view_radius = float(view_radius)
        self._pixels = torch.arange(image_size, dtype=torch.float32)
        self._colour = torch.tensor(AGENT_COLOUR, dtype=torch.float32).reshape(3, 1, 1)
        self._on: dict[torch.device, tuple[torch.Tensor, torch.Tensor]] = {}

    def _tensors(self, device: torch.device) -> tuple[torch.Tensor, torch.Tensor]:
        if device not in self._on:
            self._on[device] = (self._pixels.to(device), self._colour.to(device))
        return self._on[device]

    @property
    def shape(self) -> tuple[int, int, int]:
        """``(3, image_size, image_size)``."""
        return (3, self.image_size, self.image_size)

    def pixel_coordinates(self, position: torch.Tensor) -> torch.Tensor:
        """Continuous ``(u, v)`` = (column, row) ``[..., 2]`` of positions ``[..., 2]``,
        clamped to the frame: the mapping the frames are drawn with."""
        scale = self.image_size / (2.0 * self.view_radius)
        u = (position[..., 0] + self.view_radius) * scale - 0.5
        v = (self.view_radius - position[..., 1]) * scale - 0.5
        return torch.stack([u, v], dim=-1).clamp(0.0, self.image_size - 1.0)

    def render(self, position: torch.Tensor) -> torch.Tensor:
        """Frames ``[..., 3, S, S]`` (``uint8``) of float positions ``[..., 2]``."""
        pixels, colour = self._tensors(position.device)
        uv = self.pixel_coordinates(position.float())
        wx = (1.0 - (pixels - uv[..., 0:1]).abs()).clamp_min(0.0)  # [..., S] over columns
        wy = (1.0 - (pixels - uv[..., 1:2]).abs()).clamp_min(0.0)  # [..., S] over rows
        splat = wy.unsqueeze(-1) * wx.unsqueeze(-2)  # [..., S, S]
        return (splat.unsqueeze(-3) * colour).round().to(torch.uint8)

    def positions(self, frames: torch.Tensor) -> torch.Tensor:
        """The positions ``[..., 2]`` the frames show: the inverse of the drawing mapping at
        the intensity-weighted centre of channel 0 (to within the 8-bit rounding, for a robot
        inside the view)."""
        pixels, _ = self._tensors(frames.device)
        weight = frames[..., 0, :, :].float()
        total = weight.sum((-2, -1)).clamp_min(1e-6)
        u = (weight.sum(-2) * pixels).sum(-1) / total
        v = (weight.sum(-1) * pixels).sum(-1) / total
        scale = self.image_size / (2.0 * self.view_radius)
        x = (u + 0.5) / scale - self.view_radius
        y = self.view_radius - (v + 0.5) / scale
        return torch.stack([x, y], dim=-1)
