"""Which estimator? Measure them: exact bias and variance, a classifier, a discrete VAE.

    python benchmarks/estimators [--parts exact classifier vae] [--budget MINUTES] [--out DIR]
                                 [--data-dir MNIST_IDX_DIR] [--fashion-dir IDX_DIR] [--seed N]

Writes ``results.json``, ``report.md`` and figures to ``--out`` (default
``runs/estimators``). ``--budget`` (minutes, default 30) is shared among the parts and scales
their samples and training steps; the default runs in under 30 minutes on 2 CPU cores. See
``exact.py``, ``classifier.py`` and ``vae.py`` for what each part measures.
"""

from __future__ import annotations

import argparse
import json
import platform
import sys
import time
from pathlib import Path

import torch

import binary_neurons

sys.path.insert(0, str(Path(__file__).resolve().parent))
import classifier  # noqa: E402
import exact  # noqa: E402
import progress  # noqa: E402
import report  # noqa: E402
import vae  # noqa: E402

# Each part's share of the budget, in minutes of the default 30: the exact part's 800 batches of
# 50 samples per setting take about 2 minutes, the classifier's 24 runs of 30 epochs (its cap)
# about 3, the VAE's 12 runs of 10,000 steps about 17; the whole run about 22 minutes on 2 cores.
PARTS = {"exact": 5, "classifier": 5, "vae": 20}


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--parts", nargs="+", choices=list(PARTS), default=list(PARTS))
    parser.add_argument("--budget", type=float, default=30.0,
                        help="minutes for everything (default 30); scales samples and steps")
    parser.add_argument("--out", type=Path, default=Path("runs/estimators"))
    parser.add_argument("--data-dir", type=Path, default=None,
                        help="MNIST IDX files for the classifier's test digits (default: "
                        "../shared/data/mnist beside the checkout, if present); the VAE also "
                        "trains on MNIST when this directory holds the training set")
    parser.add_argument("--fashion-dir", type=Path, default=None,
                        help="Fashion-MNIST IDX files for the VAE (default: "
                        "/usr/share/datasets/fashion-mnist, Debian's dataset-fashion-mnist)")
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
                    "backend": str(binary_neurons.backend_info().devices)},
        "command": " ".join(["python benchmarks/estimators", *(argv or sys.argv[1:])]),
        "budget_minutes": args.budget,
    }
    weights = sum(PARTS[part] for part in args.parts)
    share = {part: args.budget * PARTS[part] / weights for part in args.parts}
    if "exact" in args.parts:
        batches = max(10, int(800 * share["exact"] / 5))
        bar = progress.bar(len(exact.SHAPES) * len(exact.ESTIMATORS), "exact", args.no_progress)
        results["exact"] = {
            "batches": batches, "copies": 50,
            "results": exact.run(batches, 50, progress=bar.update if bar else None),
        }
        if bar:
            bar.close()
    if "classifier" in args.parts:
        results["classifier"] = classifier.run(share["classifier"], args.data_dir, args.seed,
                                               args.no_progress)
    if "vae" in args.parts:
        results["vae"] = vae.run(share["vae"], args.fashion_dir or vae.FASHION_DIR,
                                 args.data_dir or classifier.DEFAULT_DATA, args.seed,
                                 args.no_progress)
    results["seconds"] = round(time.perf_counter() - started, 1)
    (args.out / "results.json").write_text(json.dumps(results, indent=2) + "\n")
    text = report.write(results, args.out)
    (args.out / "report.md").write_text(text)
    print(text)
    print(f"estimators: {results['seconds']:.0f} s; results in {args.out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
