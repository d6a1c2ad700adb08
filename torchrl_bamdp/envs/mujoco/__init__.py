"""The MuJoCo task families of VariBAD on gymnasium v5, as batched TaskEnvs.

One class, :class:`MujocoTaskEnv`, holds ``num_envs`` gymnasium v5 environments and steps them
with a lean loop over ``env.unwrapped``: it writes the control, calls ``mujoco.mj_step`` with the
env's ``frame_skip`` (and ``mj_rnePostConstraint`` where contact forces are read, as gymnasium
does) and reads the v5 observation with the env's own ``_get_obs``. The simulators run in process
by default, or in worker processes (``workers=k``). The dynamics, observations, reset
noise and the standard reward terms (control cost, contact cost, healthy reward) are gymnasium
v5's, computed by v5's own code with v5's constants except where a family states otherwise; each
family only adds its task term and its task distribution.

Actions outside the bounds are clipped; NaN/inf actions or a wrong shape raise a ``ValueError``
naming the env. Reset noise comes from one numpy generator per env, spawned from the env seed.

================  ========================================================================
module            what it holds
================  ========================================================================
:mod:`.base`      :class:`MujocoTaskEnv`, the batched base env: specs, tasks, the stepping
                  loop, action checks, the vectorised reward
:mod:`.workers`   the simulator worker processes behind ``workers=k``
:mod:`.families`  the task families (table and deliberate differences from the original)
                  and :data:`MUJOCO_FAMILIES`
================  ========================================================================
"""

from torchrl_bamdp.envs.mujoco.base import KNOWN_MODEL_WARNINGS, MujocoTaskEnv
from torchrl_bamdp.envs.mujoco.families import (
    MUJOCO_FAMILIES,
    AntDirEnv,
    AntGoalEnv,
    CheetahDirEnv,
    CheetahVelEnv,
    HumanoidDirEnv,
    WalkerRandParamsEnv,
)

__all__ = [
    "KNOWN_MODEL_WARNINGS",
    "MUJOCO_FAMILIES",
    "AntDirEnv",
    "AntGoalEnv",
    "CheetahDirEnv",
    "CheetahVelEnv",
    "HumanoidDirEnv",
    "MujocoTaskEnv",
    "WalkerRandParamsEnv",
]
