"""Progress bars for the benchmark's parts: tqdm when installed and wanted, else none."""

from __future__ import annotations


def bar(total: int, label: str, off: bool = False):
    """A tqdm bar of ``total`` steps, or None (no tqdm, or ``off``); callers check for None."""
    if off:
        return None
    try:
        from tqdm import tqdm
    except ImportError:
        return None
    return tqdm(total=total, desc=label, mininterval=1.0)
