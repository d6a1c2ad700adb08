"""Data containers: the whole-trajectory buffer the ELBO samples from."""

from torchrl_bamdp.data.trajectory_buffer import DEFAULT_TRAJECTORY_KEYS, TrajectoryBuffer

__all__ = ["DEFAULT_TRAJECTORY_KEYS", "TrajectoryBuffer"]
