"""The convolutional embedding of image observations (``env.observation=pixels``)."""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn
from torch.nn import functional as F


class PixelEmbedding(nn.Module):
    """A small CNN from frames ``[..., C, H, W]`` to features ``[..., features]``.

    ``len(channels)`` convolutions (``channels[i]`` filters of ``kernel_sizes[i]``, stride
    ``strides[i]``, padding ``(kernel - stride + 1) // 2``), each followed by a ReLU, then a
    ``Linear`` + ``LayerNorm`` + ReLU on the flattened maps (the layer norm is per frame: no
    frame's features depend on the others' in the batch). Any leading dims are batch dims. The
    input is multiplied by ``input_scale`` first: ``1/255`` for raw ``uint8`` frames (the
    belief encoder, the decoders), ``1`` for frames already scaled to ``[0, 1]`` (the policy's,
    inside the hyper-state).

    Parameters
    ----------
    image_shape : sequence of int
        ``(C, H, W)`` of one frame.
    features : int
        Output width (``out_features``).
    channels, kernel_sizes, strides : sequence of int
        The convolutions, one entry each (``algo.cnn``).
    input_scale : float
        Factor applied to the input values.
    flat_input : bool
        The input holds each frame flattened, ``[..., C * H * W]`` (a segment of the
        hyper-state), instead of ``[..., C, H, W]``.

    Examples
    --------
    >>> cnn = PixelEmbedding((3, 32, 32), features=64)
    >>> frames = torch.randint(0, 256, (4, 7, 3, 32, 32), dtype=torch.uint8)
    >>> cnn(frames).shape
    torch.Size([4, 7, 64])
    >>> cnn.in_features, cnn.out_features
    (3072, 64)
    >>> flat = PixelEmbedding((3, 32, 32), 64, input_scale=1.0, flat_input=True)
    >>> flat(torch.rand(5, 3072)).shape
    torch.Size([5, 64])
    """

    def __init__(
        self,
        image_shape: Sequence[int],
        features: int,
        channels: Sequence[int] = (16, 32),
        kernel_sizes: Sequence[int] = (4, 3),
        strides: Sequence[int] = (4, 2),
        input_scale: float = 1.0 / 255.0,
        flat_input: bool = False,
    ) -> None:
        super().__init__()
        shape = tuple(int(n) for n in image_shape)
        if len(shape) != 3 or min(shape) < 1:
            raise ValueError(f"PixelEmbedding: image_shape must be (C, H, W) (got {image_shape!r})")
        if not (len(channels) == len(kernel_sizes) == len(strides)) or not channels:
            raise ValueError(
                "PixelEmbedding: channels, kernel_sizes and strides need one entry per "
                f"convolution (got {list(channels)}, {list(kernel_sizes)}, {list(strides)})"
            )
        self.image_shape = shape
        self.input_scale = float(input_scale)
        self.flat_input = bool(flat_input)
        self.in_features = shape[0] * shape[1] * shape[2]
        self.out_features = int(features)
        layers: list[nn.Module] = []
        depth, height, width = shape
        for out, kernel, stride in zip(channels, kernel_sizes, strides, strict=True):
            padding = max(0, (kernel - stride + 1) // 2)
            layers += [nn.Conv2d(depth, out, kernel, stride, padding), nn.ReLU()]
            depth = out
            height = (height + 2 * padding - kernel) // stride + 1
            width = (width + 2 * padding - kernel) // stride + 1
        if height < 1 or width < 1:
            raise ValueError(
                f"PixelEmbedding: the convolutions leave nothing of {shape[1]}x{shape[2]} frames "
                f"(kernel_sizes {list(kernel_sizes)}, strides {list(strides)})"
            )
        self.convs = nn.Sequential(*layers)
        # The layer norm makes the features of frames that differ in a few pixels (an agent on a
        # static background) differ at the scale of a state's: on the 25 GridNavi cells their
        # std across cells is 0.27-0.31 (3 init seeds; a state's Linear(2, 32) features: 0.34),
        # without it 0.03-0.08, and the belief did not pick up a goal's reward in 300k frames.
        self.head = nn.Sequential(
            nn.Linear(depth * height * width, features), nn.LayerNorm(features), nn.ReLU()
        )
        # Orthogonal weights with the ReLU gain and zero biases, as PPO's pixel agents use
        # (PyTorch's default init left 13 of 32 features dead on those cells).
        for layer in (*self.convs, *self.head):
            if isinstance(layer, nn.Conv2d | nn.Linear):
                nn.init.orthogonal_(layer.weight, gain=2**0.5)
                nn.init.zeros_(layer.bias)

    def forward(self, frames: torch.Tensor) -> torch.Tensor:
        lead = frames.shape[:-1] if self.flat_input else frames.shape[:-3]
        x = frames.reshape(-1, *self.image_shape).to(torch.float32)
        first, *rest = self.convs
        # The input scale is applied to the first convolution's weights, not to the frames:
        # the same function, without a pass over every pixel of the batch (on the ELBO's 6000
        # frames, as long as the convolution itself on the CPU).
        weight = first.weight * self.input_scale if self.input_scale != 1.0 else first.weight
        x = F.conv2d(x, weight, first.bias, first.stride, first.padding)
        for layer in rest:
            x = layer(x)
        features = self.head(x.flatten(1))
        return features.reshape(*lead, self.out_features)
