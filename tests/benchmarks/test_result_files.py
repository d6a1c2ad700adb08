"""Committed result files are portable: no path of the machine that produced them."""

from __future__ import annotations

import json
import re
import tempfile
from pathlib import Path

from torchrl_bamdp.utils import portable_paths, write_result_json

ROOT = Path(__file__).resolve().parents[2]
ABSOLUTE = re.compile(r"(?<![\w.:/$~])/(?:work|tmp|root|home|Users|private|var/folders|opt)/")


def test_committed_results_hold_no_absolute_paths():
    offenders = []
    for path in sorted((ROOT / "benchmarks" / "results").rglob("*")):
        if path.suffix not in (".json", ".md", ".csv", ".txt") or not path.is_file():
            continue
        for n, line in enumerate(path.read_text().splitlines(), 1):
            if ABSOLUTE.search(line) or str(ROOT) in line:
                offenders.append(f"{path.relative_to(ROOT)}:{n}: {line.strip()[:120]}")
    assert not offenders, "\n".join(offenders[:20])


def test_portable_paths_rewrites_repository_temp_and_home_paths(tmp_path, monkeypatch):
    monkeypatch.setenv("HOME", "/home/someone")
    tmp = tempfile.gettempdir()
    report = {
        "command": f"python {ROOT}/benchmarks/soak.py --out {ROOT}/benchmarks/results/x.json",
        "argv": [f"{ROOT}/.venv/bin/bamdp-train", f"run_dir={tmp}/run7", "seed=3"],
        "runs": [{"run_dir": f"{ROOT}/runs/a"}, {"run_dir": "/home/someone/runs/b"}],
        "root": str(ROOT),
        "frames": 240,
    }
    out = portable_paths(report, roots=[ROOT])
    assert out == {
        "command": "python benchmarks/soak.py --out benchmarks/results/x.json",
        "argv": [".venv/bin/bamdp-train", "run_dir=$TMPDIR/run7", "seed=3"],
        "runs": [{"run_dir": "runs/a"}, {"run_dir": "~/runs/b"}],
        "root": ".",
        "frames": 240,
    }
    write_result_json(tmp_path / "r.json", report)
    text = (tmp_path / "r.json").read_text()
    assert str(ROOT) not in text and "$TMPDIR/run7" in text
    assert json.loads(text)["frames"] == 240
