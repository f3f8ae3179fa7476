"""Tests of the sample-evaluation metrics (examples/binarygan/metrics.py), their reference
(examples/binarygan/reference.py: the digit classifier, its cache, evaluate_samples) and the
histogram of p (examples/binarygan/plots.py).

The separation tests train the digit classifier on 8,000 of the 10,000 real MNIST test digits
in ../shared/data/mnist (a few seconds on one thread) and compare held-out real digits with
Bernoulli noise of the same ink density and with a single-class set.
"""

from __future__ import annotations

import json
import math
import warnings
from pathlib import Path

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from examples.binarygan import data
from examples.binarygan import metrics as M
from examples.binarygan import reference as R
from examples.binarygan.plots import preactivation_histogram
from tests.conftest import MNIST_DIR

N_TRAIN, N_REF = 8000, 1000  # classifier training digits; held-out reference digits


pytestmark = [pytest.mark.example, pytest.mark.usefixtures("one_thread")]


def random_binary(n: int, density: float = 0.2, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    return (rng.random((n, 28, 28)) < density).astype(np.uint8)


# ----------------------------------------------------------------------------------------------
# Input validation
# ----------------------------------------------------------------------------------------------


class TestCheckBinaryImages:
    @pytest.mark.parametrize(
        "make",
        [
            lambda x: x,
            lambda x: x.reshape(-1, 1, 28, 28),
            lambda x: x.reshape(-1, 784),
            lambda x: x.astype(bool),
            lambda x: x.astype(np.float32),
            lambda x: x.astype(np.int64),
            lambda x: torch.from_numpy(x.astype(np.float32)).reshape(-1, 1, 28, 28),
        ],
        ids=["uint8", "nchw", "flat", "bool", "float32", "int64", "torch"],
    )
    def test_accepted_forms(self, make):
        images = random_binary(3)
        out = M.check_binary_images(make(images))
        assert out.dtype == np.uint8 and out.shape == (3, 28, 28)
        np.testing.assert_array_equal(out, images)

    def test_does_not_modify_input(self):
        images = random_binary(2).astype(np.float32)
        before = images.copy()
        M.check_binary_images(images)
        np.testing.assert_array_equal(images, before)

    @pytest.mark.parametrize(
        "shape", [(28, 28), (2, 28, 27), (2, 3, 28, 28), (2, 783), (2, 1, 1, 28, 28)]
    )
    def test_wrong_shape(self, shape):
        with pytest.raises(ValueError, match=r"has shape .*accepted: \(N, 28, 28\)"):
            M.check_binary_images(np.zeros(shape, np.uint8), "samples")

    def test_empty(self):
        with pytest.raises(ValueError, match="empty"):
            M.check_binary_images(np.zeros((0, 28, 28), np.uint8))

    @pytest.mark.parametrize("bad", [2, 255, 0.5, -1, float("nan")])
    def test_non_binary(self, bad):
        images = random_binary(2).astype(np.float64)
        images[1, 3, 4] = bad
        with pytest.raises(ValueError, match="samples is not binary.*accepted: values 0 and 1"):
            M.check_binary_images(images, "samples")

    @pytest.mark.parametrize("dtype", [np.complex64, object, "U1"])
    def test_wrong_dtype(self, dtype):
        images = random_binary(2).astype(dtype)
        with pytest.raises(ValueError, match="has dtype .*accepted: a boolean, integer or float"):
            M.check_binary_images(images)

    def test_wrong_type(self):
        with pytest.raises(TypeError, match="numpy array or a torch tensor, got list"):
            M.check_binary_images([[0, 1]])


class TestCheckLabels:
    def test_accepted(self):
        for labels in ([0, 9, 3], np.array([0, 9, 3], np.uint8), torch.tensor([0, 9, 3])):
            out = M.check_labels(labels, 3, "labels")
            assert out.dtype == np.int64 and out.tolist() == [0, 9, 3]

    @pytest.mark.parametrize("labels", [[0, 1], [0, 1, 2, 3], [[0, 1, 2]], [0.0, 1.0, 2.0]])
    def test_wrong_shape_or_dtype(self, labels):
        with pytest.raises(ValueError, match=r"labels has shape .*accepted: integer labels of "
                                             r"shape \(3,\)"):
            M.check_labels(np.asarray(labels), 3, "labels")

    @pytest.mark.parametrize("bad", [-1, 10])
    def test_out_of_range(self, bad):
        with pytest.raises(ValueError, match="labels must lie in 0-9"):
            M.check_labels([0, bad, 3], 3, "labels")


# ----------------------------------------------------------------------------------------------
# Pixel statistics
# ----------------------------------------------------------------------------------------------


class TestPixelStatistics:
    def test_ink_density(self):
        images = np.zeros((2, 28, 28), np.uint8)
        images[0, :14] = 1  # half on
        out = M.ink_density(images)
        assert out["mean"] == pytest.approx(0.25)
        assert out["std"] == pytest.approx(0.25)

    def test_isolated_single_pixels(self):
        images = np.zeros((1, 28, 28), np.uint8)
        images[0, 5, 5] = images[0, 0, 0] = images[0, 27, 27] = 1  # corners: border is off
        assert M.isolated_pixel_rate(images) == 1.0

    @pytest.mark.parametrize("offset", [(0, 1), (1, 0), (1, 1), (1, -1)])
    def test_neighbours_in_all_eight_directions(self, offset):
        images = np.zeros((1, 28, 28), np.uint8)
        images[0, 10, 10] = images[0, 10 + offset[0], 10 + offset[1]] = 1
        images[0, 20, 20] = 1  # the one isolated pixel of three
        assert M.isolated_pixel_rate(images) == pytest.approx(1 / 3)

    def test_no_ink(self):
        assert M.isolated_pixel_rate(np.zeros((2, 28, 28), np.uint8)) == 0.0

    def test_noise_matches_closed_form(self):
        density = 0.2
        rate = M.isolated_pixel_rate(random_binary(500, density))
        # (1 - d)^k for a pixel with k neighbours: 8 inside, 5 on an edge, 3 in a corner.
        q = 1 - density
        expected = (26 * 26 * q**8 + 4 * 26 * q**5 + 4 * q**3) / 784
        assert rate == pytest.approx(expected, abs=0.005)


class TestNearestNeighbour:
    def brute_force(self, samples, training):
        s = samples.reshape(len(samples), 1, -1).astype(int)
        t = training.reshape(1, len(training), -1).astype(int)
        return np.abs(s - t).sum(axis=2).min(axis=1)

    @settings(max_examples=25, deadline=None)
    @given(
        n=st.integers(1, 9),
        n_train=st.integers(1, 7),
        chunk=st.integers(1, 10),
        seed=st.integers(0, 2**16),
        density=st.floats(0.0, 1.0),
    )
    def test_matches_brute_force(self, n, n_train, chunk, seed, density):
        samples, training = random_binary(n, density, seed), random_binary(n_train, 0.3, seed + 1)
        got = M.nearest_neighbour_hamming(samples, training, chunk_size=chunk)
        assert got.dtype == np.int64
        np.testing.assert_array_equal(got, self.brute_force(samples, training))

    def test_exact_copies_have_distance_zero(self):
        training = random_binary(20)
        samples = np.concatenate([training[[3, 7]], random_binary(2, seed=9)])
        got = M.nearest_neighbour_hamming(samples, training)
        assert got[0] == got[1] == 0 and got[2] > 0 and got[3] > 0

    def test_bad_chunk_size(self):
        with pytest.raises(ValueError, match="chunk_size"):
            M.nearest_neighbour_hamming(random_binary(1), random_binary(1), chunk_size=0)


# ----------------------------------------------------------------------------------------------
# Distribution statistics
# ----------------------------------------------------------------------------------------------


class TestFrechet:
    def test_identical_sets(self):
        a = np.random.default_rng(0).normal(size=(200, 5))
        assert M.frechet_distance(a, a) == pytest.approx(0.0, abs=1e-8)

    def test_scaled_and_shifted_closed_form(self):
        # b = 2a + c: cov_b = 4 cov_a commutes with cov_a, tr sqrt(cov_a cov_b) = 2 tr cov_a,
        # so FD = |mu_a + c|^2 + tr cov_a + 4 tr cov_a - 4 tr cov_a = |mu_a + c|^2 + tr cov_a.
        a = np.random.default_rng(1).normal(size=(300, 6)) @ np.diag([1, 2, 3, 0.5, 1, 1])
        shift = np.arange(6.0)
        expected = ((a.mean(0) + shift) ** 2).sum() + np.trace(np.cov(a, rowvar=False))
        assert M.frechet_distance(a, 2 * a + shift) == pytest.approx(expected, rel=1e-9)

    def test_matches_scipy_sqrtm(self):
        linalg = pytest.importorskip("scipy.linalg")
        rng = np.random.default_rng(2)
        a, b = rng.normal(size=(100, 4)), rng.normal(size=(80, 4)) @ rng.normal(size=(4, 4))
        ca, cb = np.cov(a, rowvar=False), np.cov(b, rowvar=False)
        cross = linalg.sqrtm(ca @ cb).real
        expected = ((a.mean(0) - b.mean(0)) ** 2).sum() + np.trace(ca + cb - 2 * cross)
        assert M.frechet_distance(a, b) == pytest.approx(expected, rel=1e-7)

    def test_rank_deficient(self):
        a = np.zeros((50, 3))
        a[:, 0] = np.random.default_rng(3).normal(size=50)  # two dead features, as ReLU gives
        assert math.isfinite(M.frechet_distance(a, a + 1.0))

    def test_bad_shapes(self):
        with pytest.raises(ValueError, match="features must be two 2-D arrays"):
            M.frechet_distance(np.zeros((5, 3)), np.zeros((5, 4)))


class TestClassCoverage:
    def test_uniform(self):
        out = M.class_coverage(np.arange(100) % 10, np.full(10, 0.1))
        assert out["histogram"] == [0.1] * 10
        assert out["entropy"] == pytest.approx(math.log(10))
        assert out["kl_to_real"] == pytest.approx(0.0, abs=1e-12)

    def test_single_class(self):
        real = np.array([0.2] + [0.8 / 9] * 9)
        out = M.class_coverage(np.zeros(7, int), real)
        assert out["entropy"] == 0.0
        assert out["kl_to_real"] == pytest.approx(math.log(1 / 0.2))

    def test_hand_computed(self):
        out = M.class_coverage([0, 0, 1, 3])
        q = np.array([0.5, 0.25, 0.25])
        assert out["entropy"] == pytest.approx(-(q * np.log(q)).sum())
        assert "kl_to_real" not in out

    def test_bad_real_distribution(self):
        with pytest.raises(ValueError, match="real_distribution"):
            M.class_coverage([0, 1], np.full(10, 0.2))


class TestPreactivationHistogram:
    def test_uniform_density_is_one(self):
        p = (np.arange(5000) + 0.5) / 5000
        out = preactivation_histogram(p)
        assert out["bins"] == 50 and len(out["density"]) == 50 and len(out["edges"]) == 51
        np.testing.assert_allclose(out["density"], 1.0)
        assert out["counts"] == [100] * 50 and out["count"] == 5000

    def test_counts_and_bins(self):
        p = torch.tensor([[0.1, 0.2], [0.3, 0.9]])  # any shape; 4 bins of 0.25
        out = preactivation_histogram(p, bins=4)
        assert out["counts"] == [2, 1, 0, 1] and out["edges"] == [0.0, 0.25, 0.5, 0.75, 1.0]
        assert out["density"] == [2.0, 1.0, 0.0, 1.0]
        json.dumps(out, allow_nan=False)
        with pytest.raises(ValueError, match="bins must be >= 1"):
            preactivation_histogram(p, bins=0)

    def test_first_and_last_bin(self):
        p = torch.tensor([0.0, 0.001, 0.5, 1.0])  # 1.0 falls in the last (closed) bin
        out = preactivation_histogram(p)
        assert out["first_bin_fraction"] == 0.5 and out["last_bin_fraction"] == 0.25
        assert out["first_bin_density"] == 25.0 and out["last_bin_density"] == 12.5
        assert sum(out["density"]) / out["bins"] == pytest.approx(1.0)

    @pytest.mark.parametrize("bad", [[-0.1, 0.5], [0.5, 1.5], [float("nan")], []])
    def test_bad_values(self, bad):
        with pytest.raises(ValueError, match="p "):
            preactivation_histogram(np.array(bad))


# ----------------------------------------------------------------------------------------------
# Classifier and cache (small synthetic data: fast)
# ----------------------------------------------------------------------------------------------


def toy_digits(n: int = 300, seed: int = 0):
    """Ten easily separated binary 'classes': a block whose grid position encodes the label."""
    rng = np.random.default_rng(seed)
    labels = rng.integers(0, 10, n)
    images = (rng.random((n, 28, 28)) < 0.02).astype(np.uint8)
    for i, label in enumerate(labels):
        row, col = divmod(int(label), 4)
        images[i, 2 + 9 * row : 8 + 9 * row, 1 + 7 * col : 6 + 7 * col] = 1
    return images, labels


class TestClassifierCache:
    def test_training_is_reproducible(self):
        images, labels = toy_digits()
        a = R.train_classifier(images, labels, epochs=1, seed=3)
        b = R.train_classifier(images, labels, epochs=1, seed=3)
        c = R.train_classifier(images, labels, epochs=1, seed=4)
        for (name, pa), pb, pc in zip(a.state_dict().items(), b.state_dict().values(),
                                      c.state_dict().values()):
            assert torch.equal(pa, pb), name
        assert not all(torch.equal(pa, pc) for pa, pc in zip(a.parameters(), c.parameters()))

    def test_global_rng_untouched(self):
        images, labels = toy_digits(50)
        state = torch.get_rng_state()
        R.train_classifier(images, labels, epochs=1)
        assert torch.equal(state, torch.get_rng_state())

    def test_cache_round_trip(self, tmp_path):
        images, labels = toy_digits()
        model, info = R.load_or_train_classifier(images, labels, cache_dir=tmp_path, epochs=1)
        assert not info["from_cache"] and Path(info["cache_file"]).is_file()
        assert [p.name for p in tmp_path.iterdir()] == [Path(info["cache_file"]).name]  # no temp
        again, info2 = R.load_or_train_classifier(images, labels, cache_dir=tmp_path, epochs=1)
        assert info2["from_cache"] and info2["cache_key"] == info["cache_key"]
        for pa, pb in zip(model.state_dict().values(), again.state_dict().values()):
            assert torch.equal(pa, pb)

    def test_key_depends_on_data_and_settings(self, tmp_path):
        images, labels = toy_digits(100)
        _, base = R.load_or_train_classifier(images, labels, cache_dir=tmp_path, epochs=1)
        flipped = images.copy()
        flipped[0, 0, 0] ^= 1
        _, other_data = R.load_or_train_classifier(flipped, labels, cache_dir=tmp_path, epochs=1)
        _, other_seed = R.load_or_train_classifier(images, labels, cache_dir=tmp_path, epochs=1,
                                                   seed=1)
        keys = {base["cache_key"], other_data["cache_key"], other_seed["cache_key"]}
        assert len(keys) == 3 and not other_data["from_cache"] and not other_seed["from_cache"]

    def test_corrupt_cache_is_retrained(self, tmp_path):
        images, labels = toy_digits(100)
        _, info = R.load_or_train_classifier(images, labels, cache_dir=tmp_path, epochs=1)
        Path(info["cache_file"]).write_bytes(b"not a checkpoint")
        with pytest.warns(UserWarning, match="unreadable classifier cache"):
            _, info2 = R.load_or_train_classifier(images, labels, cache_dir=tmp_path, epochs=1)
        assert not info2["from_cache"]
        with warnings.catch_warnings():
            warnings.simplefilter("error")
            assert R.load_or_train_classifier(images, labels, cache_dir=tmp_path, epochs=1)[1][
                "from_cache"
            ]

    def test_no_cache(self, tmp_path, monkeypatch):
        monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path))
        images, labels = toy_digits(50)
        _, info = R.load_or_train_classifier(images, labels, use_cache=False, epochs=1)
        assert info["cache_file"] is None and not any(tmp_path.iterdir())

    def test_default_cache_dir(self, tmp_path, monkeypatch):
        monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path))
        assert R.default_cache_dir() == tmp_path / "binary_neurons"

    def test_bad_labels(self):
        images, labels = toy_digits(20)
        with pytest.raises(ValueError, match="labels has shape"):
            R.train_classifier(images, labels[:-1])
        with pytest.raises(ValueError, match="must lie in 0-9"):
            R.train_classifier(images, labels + 10)


def test_evaluate_samples_on_toy_reference(tmp_path):
    images, labels = toy_digits(400)
    reference = R.make_reference(images[:300], labels[:300], images[300:], labels[300:],
                                 cache_dir=tmp_path, epochs=3)
    assert reference.info["classifier_accuracy"] > 0.9
    p = np.random.default_rng(0).random(1000)
    out = R.evaluate_samples(images[:50], reference, preactivations=p)
    json.dumps(out, allow_nan=False)  # JSON-serialisable, no NaN/inf
    assert out["exact_copy_rate"] == 1.0 and out["nearest_neighbour_hamming"]["max"] == 0
    assert out["num_samples"] == 50 and "preactivation_histogram" in out
    single = R.evaluate_samples(images[:1], reference, nearest_neighbours=False)
    assert single["frechet_distance"] is None and "exact_copy_rate" not in single


def test_reference_from_dataset(tmp_path):
    images, labels = toy_digits(200)
    reference = R.reference_from_dataset(images, labels, heldout=0.25, cache_dir=tmp_path,
                                         epochs=1)
    info = reference.info
    assert (info["num_classifier_train"], info["num_heldout"], info["num_memorisation"]) == (
        150, 50, 200)
    again = R.reference_from_dataset(images, labels, heldout=0.25, cache_dir=tmp_path, epochs=1)
    assert again.info["from_cache"]  # the same seeded split: the same training set
    np.testing.assert_array_equal(again.real_features, reference.real_features)
    for bad in (0, 1, 200, 1.0, 0.0, "half", True):
        with pytest.raises(ValueError, match="heldout"):
            R.reference_from_dataset(images, labels, heldout=bad, use_cache=False, epochs=1)


# ----------------------------------------------------------------------------------------------
# Real MNIST: the metrics must separate real digits from noise and from a single class
# ----------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def mnist():
    if not (MNIST_DIR / "t10k-images-idx3-ubyte.gz").is_file():
        pytest.skip(f"real MNIST test set not found at {MNIST_DIR} (shared/ beside the repo)")
    images, labels = data.load_mnist_dir(MNIST_DIR, split="test", with_labels=True)
    return data.binarize(images).to(torch.uint8).numpy(), labels.numpy()


@pytest.fixture(scope="module")
def reference(mnist, tmp_path_factory):
    images, labels = mnist
    return R.make_reference(
        images[:N_TRAIN], labels[:N_TRAIN],
        images[N_TRAIN : N_TRAIN + N_REF], labels[N_TRAIN : N_TRAIN + N_REF],
        cache_dir=tmp_path_factory.mktemp("classifier_cache"), seed=0,
    )


@pytest.fixture(scope="module")
def scores(mnist, reference):
    images, labels = mnist
    real = images[N_TRAIN + N_REF :]  # disjoint from the classifier's and the reference's
    rng = np.random.default_rng(0)
    noise = (rng.random(real.shape) < real.mean()).astype(np.uint8)
    heldout = slice(N_TRAIN, None)
    zeros = images[heldout][labels[heldout] == 0]
    return {name: R.evaluate_samples(s, reference)
            for name, s in (("real", real), ("noise", noise), ("single", zeros))}


def test_classifier_accuracy(reference):
    assert reference.info["classifier_accuracy"] > 0.95
    assert reference.info["num_classifier_train"] == N_TRAIN


def test_real_scores_far_better_than_noise(scores):
    real, noise = scores["real"], scores["noise"]
    assert real["ink_density"]["mean"] == pytest.approx(noise["ink_density"]["mean"], abs=0.01)
    assert real["frechet_distance"] < noise["frechet_distance"] / 10
    assert real["isolated_pixel_rate"] < 0.01 < 0.1 < noise["isolated_pixel_rate"]
    real_nn, noise_nn = (s["nearest_neighbour_hamming"]["mean"] for s in (real, noise))
    assert real_nn < noise_nn - 50
    assert real["class_coverage"]["kl_to_real"] < 0.05 < 0.5 < noise["class_coverage"]["kl_to_real"]
    assert real["mean_confidence"] > 0.9 > noise["mean_confidence"]
    assert real["exact_copy_rate"] < 0.01 and noise["exact_copy_rate"] == 0.0
    json.dumps(scores, allow_nan=False)


def test_single_class_shows_low_coverage(scores):
    real, single = scores["real"], scores["single"]
    assert real["class_coverage"]["entropy"] > 0.95 * math.log(10)
    assert single["class_coverage"]["entropy"] < 0.5
    assert single["class_coverage"]["kl_to_real"] > 1.5
    assert single["frechet_distance"] > 10 * real["frechet_distance"]


def test_training_digits_are_exact_copies(mnist, reference):
    images, _ = mnist
    out = R.evaluate_samples(images[:200], reference)
    assert out["exact_copy_rate"] == 1.0 and out["nearest_neighbour_hamming"]["mean"] == 0.0
