"""The Python code blocks of docs/estimators.md ("Writing an estimator") run as written."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

PAGE = Path(__file__).resolve().parents[2] / "docs" / "estimators.md"
BLOCKS = re.findall(r"```python\n(.*?)```", PAGE.read_text(), flags=re.S)
# A block that is a fragment of a file in the repository (the kernel list's entry) is not run.
RUNNABLE = [block for block in BLOCKS if block.startswith("import ")]


def test_the_page_has_runnable_code():
    assert len(RUNNABLE) >= 2


@pytest.mark.parametrize("index", range(len(RUNNABLE)))
def test_block_runs(index):
    exec(compile(RUNNABLE[index], f"docs/estimators.md block {index}", "exec"),
         {"__name__": "__page__"})
