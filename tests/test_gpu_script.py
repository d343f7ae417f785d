"""experiments/gpu/run.sh, the script a GPU machine runs when one is lent, with tiny settings on
the CPU: every part runs and leaves its results (so the script cannot rot unnoticed)."""
import json
import os
import subprocess
import sys

from helpers import REPO


def test_the_gpu_script_runs_every_part_and_writes_its_results(folder, tmp_path):
    out = tmp_path / "out"
    env = {**os.environ, "SMOKE": "1", "DATA": str(folder), "OUT": str(out),
           "WORK": str(tmp_path / "work"), "CACHE": str(tmp_path / "cache"),
           "PY": sys.executable}
    result = subprocess.run(["bash", "experiments/gpu/run.sh"], cwd=REPO, env=env,
                            capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stdout[-3000:]
    grid = json.loads((out / "grid.json").read_text())
    assert [r.get("error") for r in grid["results"]] == [None]
    assert grid["results"][0]["compile_cached"]  # compiled ahead, in parallel, then loaded
    assert json.loads((out / "eval.json").read_text())["examples"] == 36
    summary = (out / "summary.txt").read_text()
    for line in ("train step: 1 of 1 rows measured", "train: 3 of 3 epochs", "test top-1",
                 "an epoch by the loop's clocks", "steps bare (train step grid)",
                 "infer: alpha 0.05", "loop: alpha 0.05"):
        assert line in summary, summary
    assert (out / "run.log").read_text().count("error") == 0
