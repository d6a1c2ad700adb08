"""What the hyper-state holds of an image observation (``env.observation=pixels``).

``hyper_state`` stays one flat float vector per step, whatever the observation (DESIGN.md §2):
policies read it and never know what produced it. A frame enters it in one of two ways
(``algo.cnn.policy``):

* :class:`FlatPixels` (``separate``): the frame itself, flattened and scaled to ``[0, 1]``; the
  policy's own CNN (a segment of its :class:`~torchrl_bamdp.modules.actor_critic.InputEmbeddings`)
  un-flattens and embeds it, trained by PPO;
* :class:`EncoderFrameFeatures` (``shared``): the belief encoder's CNN features of the frame,
  computed without gradients like the belief (the ELBO trains that CNN; PPO reads its features
  as a stored input).
"""

from __future__ import annotations

import torch
from tensordict import TensorDictBase
from tensordict.utils import NestedKey
from torchrl.data import Bounded, Composite, Unbounded
from torchrl.envs.transforms import Transform

from torchrl_bamdp.modules.encoder import BeliefEncoder
from torchrl_bamdp.transforms.belief import SharedEncoderTransform

#: Where :class:`FlatPixels` writes the flattened frame.
FLAT_PIXELS = "pixels_flat"
#: Where :class:`EncoderFrameFeatures` writes the encoder's features of the frame.
FRAME_FEATURES = "frame_features"


class FlatPixels(Transform):
    """Write a frame ``[..., C, H, W]`` (``uint8``) as a flat float vector in ``[0, 1]``.

    Parameters
    ----------
    in_key, out_key : NestedKey
        The frame (``observation``) and where its flat copy goes (:data:`FLAT_PIXELS`).

    Examples
    --------
    >>> from torchrl.envs import TransformedEnv
    >>> from torchrl_bamdp.envs import make_env
    >>> env = TransformedEnv(make_env(num_envs=2, observation="pixels"), FlatPixels())
    >>> flat = env.reset()[FLAT_PIXELS]
    >>> flat.shape, float(flat.max())
    (torch.Size([2, 3072]), 1.0)
    """

    def __init__(self, in_key: NestedKey = "observation", out_key: NestedKey = FLAT_PIXELS) -> None:
        super().__init__(in_keys=[in_key], out_keys=[out_key])

    def _apply_transform(self, frames: torch.Tensor) -> torch.Tensor:
        return frames.flatten(-3).to(torch.float32) / 255.0

    def _reset(
        self, tensordict: TensorDictBase, tensordict_reset: TensorDictBase
    ) -> TensorDictBase:
        return self._call(tensordict_reset)

    def transform_observation_spec(self, observation_spec: Composite) -> Composite:
        frames = observation_spec[self.in_keys[0]]
        batch = frames.shape[:-3]
        observation_spec[self.out_keys[0]] = Bounded(
            0.0, 1.0, shape=(*batch, frames.shape[-3:].numel()), device=frames.device
        )
        return observation_spec


class EncoderFrameFeatures(SharedEncoderTransform):
    """Write the belief encoder's embedding of the frame (``encoder.embed_observation``).

    The encoder is the one the ELBO trains (and :class:`~torchrl_bamdp.transforms.belief.
    VariationalBelief` runs), so the features are those of its latest weights; they are
    computed without gradients, except in :meth:`write_sequence` (PPO's re-encoding of stored
    tasks with ``algo.ppo.encoder_grad``).

    Parameters
    ----------
    encoder : BeliefEncoder
        The shared encoder (with a frame embedding, ``obs_net``).
    in_key, out_key : NestedKey
        The frame and where its features go (:data:`FRAME_FEATURES`).

    Examples
    --------
    >>> from torchrl.envs import TransformedEnv
    >>> from torchrl_bamdp.envs import make_env
    >>> from torchrl_bamdp.modules.pixels import PixelEmbedding
    >>> encoder = BeliefEncoder(0, 5, True, obs_embed=32, obs_net=PixelEmbedding((3, 32, 32), 32))
    >>> env = TransformedEnv(make_env(num_envs=2, observation="pixels"),
    ...                      EncoderFrameFeatures(encoder))
    >>> env.reset()[FRAME_FEATURES].shape
    torch.Size([2, 32])
    """

    def __init__(
        self,
        encoder: BeliefEncoder,
        in_key: NestedKey = "observation",
        out_key: NestedKey = FRAME_FEATURES,
    ) -> None:
        super().__init__(in_keys=[in_key], out_keys=[out_key])
        self.encoder = encoder

    def _apply_transform(self, frames: torch.Tensor) -> torch.Tensor:
        with torch.no_grad():
            return self.encoder.embed_observation(frames)

    def _reset(
        self, tensordict: TensorDictBase, tensordict_reset: TensorDictBase
    ) -> TensorDictBase:
        return self._call(tensordict_reset)

    def write_sequence(self, trajectories: TensorDictBase) -> TensorDictBase:
        """The features of ``[N, T]`` stored frames, with gradients (PPO's re-encoding)."""
        frames = trajectories.get(self.in_keys[0])
        trajectories.set(self.out_keys[0], self.encoder.embed_observation(frames))
        return trajectories

    def transform_observation_spec(self, observation_spec: Composite) -> Composite:
        frames = observation_spec[self.in_keys[0]]
        width = self.encoder.obs_encoder.out_features
        observation_spec[self.out_keys[0]] = Unbounded(
            shape=(*frames.shape[:-3], width), device=frames.device
        )
        return observation_spec
