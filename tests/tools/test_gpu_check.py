"""make gpu-check's report and deadlines, checked here: a GPU window is too short to find out
there that a failure's message was lost or that a stage ran past its time."""

from __future__ import annotations

import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

TOOLS = Path(__file__).resolve().parents[2] / "tools"
sys.path.insert(0, str(TOOLS))
import gpu_check  # noqa: E402
import gpu_stages  # noqa: E402

FAILING = '''
import time

def helper(depth):
    if depth == 0:
        raise RuntimeError("Error: accessing tensor output of CUDAGraphs that has been "
                           "overwritten by a subsequent run.\\nSecond line of the message.")
    helper(depth - 1)

def test_deep_failure():
    helper(60)

def test_slow():
    time.sleep(0.3)

def test_error_in_fixture(missing_fixture):
    pass
'''


@pytest.fixture(scope="module")
def report(tmp_path_factory) -> dict:
    """pytest's JUnit report of a file with a failure deep in a call stack, as read by
    gpu_check."""
    folder = tmp_path_factory.mktemp("junit")
    (folder / "test_sample.py").write_text(textwrap.dedent(FAILING))
    xml = folder / "report.xml"
    subprocess.run([sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider",
                    f"--junitxml={xml}", str(folder / "test_sample.py")],
                   cwd=folder, capture_output=True, check=False)
    return gpu_check.read_junit(xml)


def test_counts_and_durations(report):
    assert (report["tests"], report["failures"], report["errors"]) == (3, 1, 1)
    durations = dict(report["durations"])
    assert durations["test_sample::test_slow"] >= 0.3


def test_summary_holds_each_failure_in_full(report):
    figures = {"stages": {"tests-graphs-native": {"status": "failed", "seconds": 1.0, **report}}}
    summary = "\n".join(gpu_check.details(figures))
    # The error's type and whole message, and the frame that raised it, not just a first line.
    assert "RuntimeError: Error: accessing tensor output of CUDAGraphs" in summary
    assert "Second line of the message." in summary
    assert "test_sample.py:6: RuntimeError" in summary
    assert f"(the last {gpu_check.TRACEBACK_LINES} of" in summary  # a deep stack, cut
    assert "### test_sample::test_error_in_fixture (tests-graphs-native, error)" in summary
    assert "fixture 'missing_fixture' not found" in summary
    slowest = summary.split("slowest tests")[1].splitlines()
    assert "test_sample::test_slow" in slowest[4]  # the first row is the slowest


def test_a_stage_past_its_limit_is_stopped_and_reported(tmp_path):
    check = gpu_stages.Check("gpu-check", tmp_path, rehearsal=True, budget=60)
    ok, _ = check.run("sleeper", [sys.executable, "-c", "import time; time.sleep(30)"],
                      timeout=1)
    assert not ok
    assert check.figures["stages"]["sleeper"]["status"] == "timed out after 1 s"
    check.skip("later", "nothing to do")
    assert check.finish([]) == 1
    summary = (tmp_path / "summary.md").read_text()
    assert "| sleeper | timed out after 1 s |" in summary and "| later | skipped" in summary


def test_a_stage_keeps_time_for_the_later_ones(tmp_path):
    check = gpu_stages.Check("gpu-check", tmp_path, rehearsal=True, budget=100)
    assert check.timeout(cap=75, keep=50) == pytest.approx(50, abs=1)
    assert check.timeout(cap=30, keep=50) == 30
    assert check.timeout(cap=75, keep=95) == 20  # never below a floor that can do something
