"""The oracle's hyper-state: the observation and the true task (the upper reference)."""

from __future__ import annotations

from tensordict.utils import NestedKey
from torchrl.envs.transforms import CatTensors, Compose, Transform

from torchrl_bamdp.transforms.belief import hyper_state_transform


def oracle_transforms(
    task_key: NestedKey = "task", observation: Transform | None = None
) -> CatTensors | Compose:
    """``hyper_state = [observation, task]``: a policy that knows the MDP it acts in.

    Only the oracle may read ``task`` (DESIGN.md §2); it bounds what any belief can reach.
    ``observation`` writes what ``hyper_state`` holds of the observation in its place (for
    frames, :class:`~torchrl_bamdp.transforms.pixels.FlatPixels`); the result is then a
    ``Compose`` of the two.

    Examples
    --------
    >>> from torchrl.envs import TransformedEnv
    >>> from torchrl_bamdp.envs import make_env
    >>> env = TransformedEnv(make_env(num_envs=3), oracle_transforms())
    >>> td = env.reset()
    >>> bool((td["hyper_state"][:, 2:] == td["task"]).all())
    True
    """
    if observation is None:
        return hyper_state_transform(belief_keys=[task_key])
    (observation_key,) = observation.out_keys
    return Compose(
        observation, hyper_state_transform(belief_keys=[task_key], observation_key=observation_key)
    )
