"""How fast does the ELBO learn a usable GridNavi belief? (encoder/decoder settings, offline)

Collects whole BAMDP trajectories with a uniformly random policy (fixed seed), trains only the
encoder and reward decoder with :class:`~torchrl_bamdp.objectives.ELBOLoss` for a number of
updates, and measures on held-out trajectories how much probability the decoded belief puts on
the true goal cell at the steps *after the goal has been seen* (ideal: 1.0), and how often that
cell is the belief's most likely cell. This isolates belief learning from the policy, and is how
the GridNavi encoder/decoder defaults were chosen (see the README).

Run: ``.venv/bin/python benchmarks/belief_quality.py`` (compares the original settings with
ours; about 5 minutes on 2 cores), or pick settings with the options.
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import torch
import torchrl

from torchrl_bamdp.envs import make_env
from torchrl_bamdp.modules import BeliefEncoder, GridCellRewardDecoder
from torchrl_bamdp.objectives import ELBOLoss
from torchrl_bamdp.utils import write_result_json

ROOT = Path(__file__).resolve().parent.parent

SETTINGS = {
    "original": {"obs_embed": 8, "decoder_hidden": [], "lr": 1e-3, "batch": 25, "subsample": None},
    "ours": {
        "obs_embed": 32,
        "decoder_hidden": [64, 64],
        "lr": 3e-3,
        "batch": 100,
        "subsample": 15,
    },
}


@torch.no_grad()
def _random_trajectories(num: int, seed: int):
    env = make_env("gridworld", num_envs=num, seed=seed)
    env.set_seed(seed)
    torch.manual_seed(seed)
    return env.rollout(env.horizon, break_when_any_done=False)


@torch.no_grad()
def belief_accuracy(encoder, decoder, data) -> dict:
    mean, _, _ = encoder.sequence(
        data["action"], data["next", "reward"], data["next", "true_observation"]
    )
    probs = decoder.probabilities(mean[:, 1:])  # belief after each step, [N, T, cells]
    task = data["task"][:, 0]
    goal = (task[:, 0] * decoder.grid_size + task[:, 1]).long()
    seen = (data["next", "reward"][..., 0] > 0).cumsum(1) > 0
    goal_prob = probs.gather(-1, goal[:, None, None].expand(-1, probs.shape[1], 1))[..., 0]
    top = probs.argmax(-1) == goal[:, None]
    return {
        "p_goal_after_seen": float(goal_prob[seen].mean()),
        "goal_is_argmax_after_seen": float(top[seen].float().mean()),
        "steps_after_seen": int(seen.sum()),
    }


def train_belief(setting: dict, updates: int, train_data, test_data, seed: int, every: int):
    torch.manual_seed(seed)
    encoder = BeliefEncoder(2, 5, True, latent_dim=5, obs_embed=setting["obs_embed"])
    decoder = GridCellRewardDecoder(5, grid_size=5, hidden=setting["decoder_hidden"])
    loss = ELBOLoss(encoder, reward_decoder=decoder, elbo_subsample=setting["subsample"])
    optimizer = torch.optim.Adam(loss.parameters(), lr=setting["lr"])
    generator = torch.Generator().manual_seed(seed)
    curve = []
    start = time.perf_counter()
    for update in range(1, updates + 1):
        index = torch.randint(train_data.shape[0], (setting["batch"],), generator=generator)
        terms = loss(train_data[index])
        total = terms["loss_reward"] + 0.01 * terms["loss_kl"]
        optimizer.zero_grad(set_to_none=True)
        total.backward()
        optimizer.step()
        if update % every == 0 or update == updates:
            point = {"update": update, "seconds": time.perf_counter() - start}
            point.update(belief_accuracy(encoder, decoder, test_data))
            curve.append(point)
    return curve


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--updates", type=int, default=1500)
    parser.add_argument("--every", type=int, default=250)
    parser.add_argument("--train-trajectories", type=int, default=1000)
    parser.add_argument("--test-trajectories", type=int, default=300)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--settings", nargs="+", default=list(SETTINGS), choices=list(SETTINGS))
    parser.add_argument("--out", default=str(ROOT / "benchmarks/results/belief_quality.json"))
    args = parser.parse_args(argv)
    torch.set_num_threads(1)
    train_data = _random_trajectories(args.train_trajectories, args.seed)
    test_data = _random_trajectories(args.test_trajectories, args.seed + 1)
    report = {
        "benchmark": "belief_quality",
        "args": vars(args),
        "versions": {"torch": torch.__version__, "torchrl": torchrl.__version__},
        "settings": {name: SETTINGS[name] for name in args.settings},
        "curves": {},
    }
    for name in args.settings:
        report["curves"][name] = train_belief(
            SETTINGS[name], args.updates, train_data, test_data, args.seed, args.every
        )
    print("| setting | updates | seconds | p(goal cell after seen) | goal is argmax |")
    print("|---|---|---|---|---|")
    for name, curve in report["curves"].items():
        for p in curve:
            print(
                f"| {name} | {p['update']} | {p['seconds']:.0f} | {p['p_goal_after_seen']:.2f} | "
                f"{p['goal_is_argmax_after_seen']:.2f} |"
            )
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    write_result_json(args.out, report)
    print(f"wrote {args.out}")
    return report


if __name__ == "__main__":
    main()
