r"""A variational autoencoder with 200 Bernoulli latent units, per estimator.

The discrete-latent benchmark of the REBAR, RELAX, ARM and DisARM papers, at a CPU budget:

* **Data**: 28x28 images, dynamically binarized (every training batch draws each pixel from
  Bernoulli(intensity / 255) afresh); the test images are binarized once, with a fixed seed.
  Fashion-MNIST (60,000 training and 10,000 test images, Debian's ``dataset-fashion-mnist``) and
  MNIST when its training set is present.
* **Model**: a factorized Bernoulli prior with learned logits over 200 binary latents ``z``; a
  factorized Bernoulli decoder ``p(x | z)`` over the 784 pixels, its output bias started at the
  logit of the training set's mean pixel intensities; an encoder ``q(z | x)`` giving the latents'
  logits. ``linear``: one linear map each way (784 -> 200, 200 -> 784). ``nonlinear``: one hidden
  layer of 200 LeakyReLU (slope 0.2) units each way (784 -> 200 -> 200, 200 -> 200 -> 784).
* **Objective**: the ELBO, ``E_q[log p(x | z)] - KL(q(z | x) || p(z))``, with the KL term in
  closed form; the estimator carries the reconstruction term's gradient to the encoder through a
  :class:`binary_neurons.StochasticBinary` layer (one sample per image). REINFORCE's learning
  signal is each image's reconstruction loss, with or without its per-unit baseline.
* **Training**: Adam, learning rate 1e-3 for every parameter (the prior's logits included),
  batches of 50 images drawn with replacement, the same number of steps for every estimator
  (:data:`STEP_RATE`: 10,000 at the default budget) and the same initial weights per variant.
* **Measured**: the ELBO (one latent sample per image) on a fixed 10,000-image subset of the
  training set, at ten evenly spaced points of training, the last at the end; and at the end,
  the 100-sample importance-weighted bound on log p(x) of the test images (all 10,000 from a
  share of 8 minutes up, fewer below), ``log (1/K) sum_k p(x, z_k) / q(z_k | x)``,
  ``z_k ~ q(z | x)``, ``K = 100``, in nats per image.

Comparing with published numbers: the published runs train for 10^6 steps, at a learning rate
of 1e-4, and their nonlinear model is deeper (two hidden layers of 200 units each way). At this
budget (10,000 steps) the numbers rank the estimators early in training and sit well below the
published ones.
"""

from __future__ import annotations

import math
import sys
import time
from pathlib import Path
from typing import Optional

import torch
from torch import Tensor, nn
from torch.nn import functional as F

import binary_neurons as bn
import progress

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))
from examples.binarygan.data import DataError, load_mnist_dir  # noqa: E402

LATENTS = HIDDEN = 200
BATCH, LR = 50, 1e-3
SAMPLES = 100  # importance samples of the test bound
TRAIN_EVAL = 10_000  # training images the ELBO is measured on
CHECKPOINTS = 10
VARIANTS = ("linear", "nonlinear")
# Training steps per second of the part's budget, its evaluations included: on 2 cores of an AMD
# EPYC a step takes about 7 ms and a run's evaluations about 15 s, so 20 minutes give each of
# the 12 Fashion-MNIST runs 10,000 steps (about 17 minutes in all).
STEP_RATE = 100
FASHION_DIR = Path("/usr/share/datasets/fashion-mnist")

SETTINGS = {
    "identity": "identity",
    "sigmoid": "sigmoid",
    "gumbel tau=0.5": bn.GumbelStraightThrough(0.5),
    "gumbel tau=1": bn.GumbelStraightThrough(1.0),
    "reinforce, baseline": bn.Reinforce(baseline="variance"),
    "reinforce, no baseline": bn.Reinforce(baseline="none"),
}


class BinaryVAE(nn.Module):
    """Encoder -> 200 stochastic binary latents -> decoder, with a learned Bernoulli prior."""

    def __init__(self, variant: str, estimator, pixel_mean: Tensor, latents: int = LATENTS,
                 hidden: int = HIDDEN) -> None:
        super().__init__()
        if variant not in VARIANTS:
            raise ValueError(f"unknown variant {variant!r}; expected one of {VARIANTS}")
        pixels = pixel_mean.numel()
        if variant == "linear":
            self.encoder = nn.Linear(pixels, latents)
            self.decoder = nn.Linear(latents, pixels)
        else:
            self.encoder = nn.Sequential(nn.Linear(pixels, hidden), nn.LeakyReLU(0.2),
                                         nn.Linear(hidden, latents))
            self.decoder = nn.Sequential(nn.Linear(latents, hidden), nn.LeakyReLU(0.2),
                                         nn.Linear(hidden, pixels))
        self.latent = bn.StochasticBinary(estimator=estimator, eval_mode="sample")
        self.prior_logits = nn.Parameter(torch.zeros(latents))
        output = self.decoder if variant == "linear" else self.decoder[-1]
        with torch.no_grad():
            output.bias.copy_(torch.logit(pixel_mean.clamp(1e-3, 1 - 1e-3)))

    def forward(self, x: Tensor) -> tuple[Tensor, Tensor]:
        """Per image: the reconstruction loss -log p(x | z) at one sample z ~ q(z | x), and
        KL(q(z | x) || p(z)) in closed form."""
        logits = self.encoder(x)
        z = self.latent(logits)
        reconstruction = F.binary_cross_entropy_with_logits(
            self.decoder(z), x, reduction="none").sum(1)
        return reconstruction, bernoulli_kl(logits, self.prior_logits).sum(1)

    @torch.no_grad()
    def log_weights(self, x: Tensor, samples: int, generator: torch.Generator) -> Tensor:
        """log p(x, z_k) - log q(z_k | x) for ``samples`` draws z_k ~ q(z | x): shape
        ``(samples, N)``."""
        logits = self.encoder(x)
        z = torch.bernoulli(torch.sigmoid(logits).expand(samples, *logits.shape),
                            generator=generator)
        log_q = -F.binary_cross_entropy_with_logits(
            logits.expand_as(z), z, reduction="none").sum(-1)
        log_prior = -F.binary_cross_entropy_with_logits(
            self.prior_logits.expand_as(z), z, reduction="none").sum(-1)
        log_likelihood = -F.binary_cross_entropy_with_logits(
            self.decoder(z), x.expand(samples, *x.shape), reduction="none").sum(-1)
        return log_likelihood + log_prior - log_q


def bernoulli_kl(logits: Tensor, prior_logits: Tensor) -> Tensor:
    """KL(Bernoulli(sigmoid(logits)) || Bernoulli(sigmoid(prior_logits))), elementwise."""
    q = torch.sigmoid(logits)
    return (q * (F.logsigmoid(logits) - F.logsigmoid(prior_logits))
            + (1 - q) * (F.logsigmoid(-logits) - F.logsigmoid(-prior_logits)))


@torch.no_grad()
def elbo(model: BinaryVAE, images: Tensor, chunk: int = 2000) -> float:
    """The mean one-sample ELBO of ``images`` (already binarized), in nats per image."""
    model.eval()
    total = 0.0
    for start in range(0, len(images), chunk):
        reconstruction, kl = model(images[start:start + chunk])
        total += float((reconstruction + kl).sum())
    model.train()
    return -total / len(images)


@torch.no_grad()
def importance_bound(model: BinaryVAE, images: Tensor, samples: int, seed: int,
                     chunk: int = 100) -> float:
    """The mean ``samples``-sample importance-weighted bound on log p(x), nats per image."""
    generator = torch.Generator().manual_seed(seed)
    total = 0.0
    for start in range(0, len(images), chunk):
        weights = model.log_weights(images[start:start + chunk], samples, generator)
        total += float((torch.logsumexp(weights, 0) - math.log(samples)).sum())
    return total / len(images)


def load(data_dir: Path) -> tuple[Tensor, Tensor]:
    """(train, test) intensities in [0, 1], flattened to 784; DataError if either split is
    missing."""
    train = load_mnist_dir(data_dir, split="train")
    test = load_mnist_dir(data_dir, split="test")
    return (train.reshape(len(train), -1).float() / 255, test.reshape(len(test), -1).float() / 255)


def datasets(fashion_dir: Path, mnist_dir: Optional[Path]) -> tuple[dict, dict]:
    """The data sets present, and for each one absent, why."""
    present, skipped = {}, {}
    candidates = {"Fashion-MNIST": fashion_dir, "MNIST": mnist_dir}
    for name, directory in candidates.items():
        if directory is None:
            skipped[name] = "no directory given"
            continue
        try:
            present[name] = load(directory)
        except DataError as error:
            skipped[name] = str(error)
    hint = " (install Debian's dataset-fashion-mnist, or pass --fashion-dir)"
    if "Fashion-MNIST" in skipped:
        skipped["Fashion-MNIST"] += hint
    return present, skipped


def evaluation_sets(data: tuple[Tensor, Tensor], seed: int,
                    test_images: int) -> tuple[Tensor, Tensor]:
    """The images every run of a data set is measured on, binarized once: the first
    :data:`TRAIN_EVAL` training images and the first ``test_images`` test images."""
    train, test = data
    fixed = torch.Generator().manual_seed(seed + 1)
    return (torch.bernoulli(train[:TRAIN_EVAL], generator=fixed),
            torch.bernoulli(test[:test_images], generator=fixed))


def train_one(dataset: str, data: tuple[Tensor, Tensor], evaluation: tuple[Tensor, Tensor],
              variant: str, label: str, steps: int, seed: int) -> dict:
    """Train one VAE on ``data`` (training intensities, test intensities) and measure it on
    ``evaluation`` (from :func:`evaluation_sets`)."""
    train, _ = data
    train_eval, test_eval = evaluation
    torch.manual_seed(seed)  # the same initial weights for every estimator
    model = BinaryVAE(variant, SETTINGS[label], train.mean(0))
    optimizer = torch.optim.Adam(model.parameters(), lr=LR)
    reinforce = isinstance(SETTINGS[label], bn.Reinforce)
    batches = torch.Generator().manual_seed(seed + 2)
    curve, marks = [], {round(steps * (i + 1) / CHECKPOINTS) for i in range(CHECKPOINTS)}
    started = time.perf_counter()
    for step in range(1, steps + 1):
        index = torch.randint(len(train), (BATCH,), generator=batches)
        reconstruction, kl = model(torch.bernoulli(train[index], generator=batches))
        loss = (reconstruction + kl).mean()
        if reinforce:
            loss = loss + bn.reinforce_loss(model, reconstruction)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        if step in marks:
            curve.append((step, elbo(model, train_eval)))
    seconds = time.perf_counter() - started
    return {
        "dataset": dataset, "variant": variant, "label": label, "seed": seed, "steps": steps,
        "curve": curve, "train_elbo": curve[-1][1], "train_seconds": round(seconds, 1),
        "test_bound": importance_bound(model, test_eval, SAMPLES, seed + 3),
        "test_images": len(test_eval),
    }


def run(minutes: float, fashion_dir: Path, mnist_dir: Optional[Path], seed: int,
        no_progress: bool) -> dict:
    """Every estimator on every variant and data set present, for as many steps as fit in
    ``minutes`` at :data:`STEP_RATE`."""
    present, skipped = datasets(fashion_dir, mnist_dir)
    result = {"latents": LATENTS, "hidden": HIDDEN, "batch": BATCH, "lr": LR,
              "samples": SAMPLES, "train_eval_images": TRAIN_EVAL, "skipped": skipped,
              "runs": []}
    if not present:
        return result
    jobs = [(name, variant, label) for name in present for variant in VARIANTS
            for label in SETTINGS]
    test_images = min(10_000, max(100, int(10_000 * minutes / 8)))
    # A function of the budget and the data present alone, so that a run repeats exactly.
    result["steps"] = steps = max(50, int(round(minutes * 60 * STEP_RATE / len(jobs), -1)))
    evaluation = {name: evaluation_sets(data, seed, test_images) for name, data in present.items()}
    bar = progress.bar(len(jobs), f"vae ({steps} steps per run)", no_progress)
    for name, variant, label in jobs:
        result["runs"].append(
            train_one(name, present[name], evaluation[name], variant, label, steps, seed))
        if bar is not None:
            bar.update(1)
    if bar is not None:
        bar.close()
    return result
