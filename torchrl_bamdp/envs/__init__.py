"""Task-distribution environments and the BAMDP horizon."""

from torchrl_bamdp.envs.bamdp import BAMDPEnv
from torchrl_bamdp.envs.factory import ENV_FAMILIES, make_env, make_env_from_config
from torchrl_bamdp.envs.gridworld import GridNaviEnv, candidate_goal_cells
from torchrl_bamdp.envs.mujoco import (
    AntDirEnv,
    AntGoalEnv,
    CheetahDirEnv,
    CheetahVelEnv,
    HumanoidDirEnv,
    MujocoTaskEnv,
    WalkerRandParamsEnv,
)
from torchrl_bamdp.envs.point_robot import PointRobotEnv
from torchrl_bamdp.envs.switching import (
    TASK_SWITCHED,
    SwitchingBAMDPEnv,
    make_switching_env,
    set_tasks,
)
from torchrl_bamdp.envs.task_env import TaskEnv

__all__ = [
    "ENV_FAMILIES",
    "AntDirEnv",
    "AntGoalEnv",
    "BAMDPEnv",
    "CheetahDirEnv",
    "CheetahVelEnv",
    "GridNaviEnv",
    "HumanoidDirEnv",
    "MujocoTaskEnv",
    "PointRobotEnv",
    "SwitchingBAMDPEnv",
    "TASK_SWITCHED",
    "TaskEnv",
    "WalkerRandParamsEnv",
    "candidate_goal_cells",
    "make_env",
    "make_env_from_config",
    "make_switching_env",
    "set_tasks",
]
