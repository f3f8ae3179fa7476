"""Which estimator? Measure them: exact bias and variance, and a classifier's test accuracy.

    python benchmarks/estimators [--parts exact classifier] [--budget MINUTES] [--out DIR]
                                 [--data-dir MNIST_IDX_DIR] [--seed N]

Writes ``results.json``, ``report.md`` and figures to ``--out`` (default
``runs/estimators``). ``--budget`` (minutes, default 30) scales the number of samples and
training steps; the default runs in under 30 minutes on 2 CPU cores. See ``exact.py`` and
``classifier.py`` for what each part measures.
"""

from __future__ import annotations

import argparse
import json
import platform
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
import exact  # noqa: E402
import report  # noqa: E402

PARTS = ("exact", "classifier")


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--parts", nargs="+", choices=PARTS, default=list(PARTS))
    parser.add_argument("--budget", type=float, default=30.0,
                        help="minutes for everything (default 30); scales samples and steps")
    parser.add_argument("--out", type=Path, default=Path("runs/estimators"))
    parser.add_argument("--data-dir", type=Path, default=None,
                        help="MNIST IDX files for the classifier's test digits (default: "
                        "../shared/data/mnist beside the checkout, if present)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--no-progress", action="store_true")
    args = parser.parse_args(argv)
    if args.budget <= 0:
        parser.error(f"--budget must be a positive number of minutes, got {args.budget:g}")
    torch.set_num_threads(args.threads)
    args.out.mkdir(parents=True, exist_ok=True)
    started = time.perf_counter()
    results = {
        "machine": {"processor": platform.processor() or platform.machine(),
                    "threads": args.threads, "torch": torch.__version__,
                    "backend": str(__import__("binary_neurons").backend_info().devices)},
        "command": " ".join(["python benchmarks/estimators", *(argv or sys.argv[1:])]),
        "budget_minutes": args.budget,
    }
    share = args.budget / len(args.parts)
    if "exact" in args.parts:
        # 30 minutes in all gives the exact part 800 batches of 50 samples per setting (about
        # 5 minutes on 2 cores).
        batches = max(10, int(800 * share / 15))
        bar = _progress(len(exact.SHAPES) * len(exact.ESTIMATORS), "exact", args.no_progress)
        results["exact"] = {
            "batches": batches, "copies": 50,
            "results": exact.run(batches, 50, progress=bar.update if bar else None),
        }
        if bar:
            bar.close()
    if "classifier" in args.parts:
        import classifier

        results["classifier"] = classifier.run(share, args.data_dir, args.seed, args.no_progress)
    results["seconds"] = round(time.perf_counter() - started, 1)
    (args.out / "results.json").write_text(json.dumps(results, indent=2) + "\n")
    text = report.write(results, args.out)
    (args.out / "report.md").write_text(text)
    print(text)
    print(f"estimators: {results['seconds']:.0f} s; results in {args.out}")
    return 0


def _progress(total: int, label: str, off: bool):
    if off:
        return None
    try:
        from tqdm import tqdm
    except ImportError:
        return None
    return tqdm(total=total, desc=label, mininterval=1.0)


if __name__ == "__main__":
    raise SystemExit(main())
