"""Smoke test of the training throughput benchmark: it runs, trains, counts frames, writes JSON.

Timings are not asserted (they depend on the machine and its load); the report's shape, the
frame counts, the phase bookkeeping and the PPO steps each training variant really took are.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

SCRIPT = Path(__file__).resolve().parents[2] / "benchmarks" / "training_throughput.py"


@pytest.fixture(scope="module")
def bench(load_script):
    return load_script(SCRIPT)


def test_benchmark_report(bench, tmp_path):
    num_envs, episode_length, repeats = 4, 4, 2  # horizon 8: 32 frames per training batch
    out = tmp_path / "training.json"
    argv = ["--num-envs", str(num_envs), "--episode-length", str(episode_length)]
    argv += ["--repeats", str(repeats), "--rollout-threads", "0", "2", "--out", str(out)]
    argv += ["--steady-batches", "3"]
    returned = bench.main(argv)

    report = json.loads(out.read_text())
    assert report == json.loads(json.dumps(returned))
    measured = report["measured"][str(num_envs)]
    horizon = 2 * episode_length
    assert measured["horizon"] == horizon
    assert measured["frames_per_batch"] == num_envs * horizon
    results = measured["results"]
    assert list(results) == [
        "gym_sync_vector",
        "mujoco_rollout_0",
        "mujoco_rollout_2",
        "varibad_collector",
        "train_loop",
        "train_loop_original_ppo",
    ]
    for name, res in results.items():
        # Every variant steps one whole task per run: num_envs x horizon frames.
        assert res["frames"] == num_envs * horizon, name
        assert len(res["frames_per_s_all"]) == repeats
        assert res["frames_per_s"] > 0 and res["ratio_to_reference"] > 0, name
        assert res["description"]
    assert results["gym_sync_vector"]["ratio_to_reference"] == pytest.approx(1.0)

    tuned, original = results["train_loop"], results["train_loop_original_ppo"]
    for res in (tuned, original):
        phases = res["phases_all_s"]
        assert len(phases["total_s"]) == repeats  # the warm-up batch is not counted
        for total, update, rest in zip(
            phases["total_s"], phases["update_s"], phases["rest_s"], strict=True
        ):
            assert update > 0 and rest > 0
            assert update + rest == pytest.approx(total)
        assert min(phases["ppo_s"]) > 0 and min(phases["elbo_s"]) > 0
    # The packaged cheetah_vel PPO (10 epochs x 16 minibatches) and the original's (2 x 8):
    # the optimiser really took that many steps per batch.
    assert tuned["phases_all_s"]["ppo_steps"] == [160] * repeats
    assert original["phases_all_s"]["ppo_steps"] == [16] * repeats

    # Steady state, single vs process_async: 3 batches per run give 2 update intervals each.
    steady = report["steady_state"]
    assert steady["num_envs"] == num_envs and steady["batches_per_run"] == 3
    assert steady["frames_per_batch"] == num_envs * horizon
    assert list(steady["results"]) == ["single", "process_async"]
    for res in steady["results"].values():
        assert len(res["seconds_per_batch_per_round"]) == repeats
        assert res["seconds_per_batch"] > 0 and res["startup_s_median"] > 0
        assert res["frames_per_s"] == pytest.approx(num_envs * horizon / res["seconds_per_batch"])
    assert steady["process_async_speedup"] > 0 and steady["process_async_speedup_paired"] > 0


def test_bad_arguments_are_refused(bench):
    with pytest.raises(SystemExit, match="--num-envs"):
        bench.main(["--num-envs", "0"])
    with pytest.raises(SystemExit, match="--rollout-threads"):
        bench.main(["--rollout-threads", "-1"])
    with pytest.raises(SystemExit, match="--steady-batches"):
        bench.main(["--steady-batches", "1"])
