"""Tests of discrete Boundary-Seeking GAN in the example: the objective
(examples/binarygan/objectives.py: BGAN, importance_weights, log_likelihood) and its networks
(examples/binarygan/models.py: LogitsGenerator, Discriminator, DCGANDiscriminator)."""

from __future__ import annotations

import math

import pytest
import torch
from torch import nn

import binary_neurons as bn
from examples.binarygan import objectives
from examples.binarygan.config import get_preset
from examples.binarygan.models import (DCGANDiscriminator, Discriminator, LogitsGenerator,
                                       build_models, sample_latent)
from examples.binarygan.objectives import (BGAN, importance_weights, log_likelihood,
                                           weighted_log_likelihood_loss)
from examples.binarygan.train import update_d, update_g


pytestmark = [pytest.mark.example, pytest.mark.usefixtures("one_thread")]


def log_sigmoid(x: float) -> float:
    return -math.log1p(math.exp(-x))


def bgan(m: int = 20, weights: str = "per-z", **changes) -> BGAN:
    """The objective with M samples per z and weights normalized per z (the paper's; the
    preset's "batch" where a test says so)."""
    return BGAN(get_preset("mlp-bgan").replace(bgan_samples=m, bgan_weights=weights, **changes))


class FixedLogits(nn.Module):
    """A "generator" whose logits are a parameter, the same for every z: ``(B, *shape)``, with
    BGAN's output layer (the library's REINFORCE layer), called as LogitsGenerator is."""

    def __init__(self, logits: torch.Tensor) -> None:
        super().__init__()
        self.l = nn.Parameter(logits)
        self.output = bn.StochasticBinary(estimator="reinforce", baseline="none")

    def forward(self, z: torch.Tensor, rng=None, samples_per_z: int = 1):
        expanded = self.l.unsqueeze(0).expand(samples_per_z, *self.l.shape).flatten(0, 1)
        return self.l, self.output(expanded, rng)


class TableCritic(nn.Module):
    """D(x) = flatten(x) @ v + c: a fixed critic, with one logit per image, shape (N,)."""

    def __init__(self, v, c: float = 0.0, dtype=torch.float64) -> None:
        super().__init__()
        self.v = nn.Parameter(torch.as_tensor(v, dtype=dtype))
        self.c = nn.Parameter(torch.tensor(c, dtype=dtype))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x.flatten(1) @ self.v + self.c


# ----------------------------------------------------------------------------------------------
# Sampling: BGAN.fake
# ----------------------------------------------------------------------------------------------


class TestFake:
    def test_shape_values_no_grad(self):
        netG = FixedLogits(torch.randn(3, 1, 2, 2))
        objective = bgan(5)
        samples = objective.fake(netG, torch.zeros(3, 64))
        # M * B fakes, sample-major: [m * B + b] is the m-th sample of z_b
        assert samples.shape == (15, 1, 2, 2) and samples.dtype == torch.float32
        assert set(samples.unique().tolist()) <= {0.0, 1.0}
        assert not samples.requires_grad and samples.grad_fn is None

    def test_reproducible_with_seed(self):
        netG = FixedLogits(torch.randn(4, 10))
        draws = []
        for seed in (7, 7, 8):
            torch.manual_seed(seed)
            draws.append(bgan(3).fake(netG, torch.zeros(4, 64)))
        assert torch.equal(draws[0], draws[1]) and not torch.equal(draws[0], draws[2])

    def test_mean_is_sigmoid(self):
        # 4,000 draws per logit (500 samples of 8 z's): within 5 standard errors of sigmoid(l).
        values = torch.tensor([-3.0, -1.0, 0.0, 0.5, 2.0, 6.0])
        netG = FixedLogits(values.repeat(8, 1))
        torch.manual_seed(1)
        samples = bgan(500).fake(netG, torch.zeros(8, 64))
        p = torch.sigmoid(values)
        freq = samples.view(500 * 8, 6).mean(dim=0)
        stderr = (p * (1 - p) / 4000).sqrt()
        assert torch.all((freq - p).abs() <= 5 * stderr + 1e-3)

    def test_samples_differ_across_m(self):
        torch.manual_seed(0)
        samples = bgan(2).fake(FixedLogits(torch.zeros(1, 100)), torch.zeros(1, 64))
        assert not torch.equal(samples[0], samples[1])

    def test_samples_follow_each_z(self):
        # Sample-major layout: sample m of z_b is fake[m * B + b].
        netG = FixedLogits(torch.tensor([[-30.0] * 4, [30.0] * 4]))  # z_0 all off, z_1 all on
        torch.manual_seed(0)
        samples = bgan(3).fake(netG, torch.zeros(2, 64)).view(3, 2, 4)
        assert (samples[:, 0] == 0).all() and (samples[:, 1] == 1).all()

    @pytest.mark.parametrize("m", [0, -1])
    def test_bad_m(self, m):
        with pytest.raises(ValueError, match="bgan_samples must be >= 1"):
            bgan(m)

    def test_prior(self):
        config = get_preset("mlp-bgan")
        z = sample_latent(config, 64, rng=torch.Generator().manual_seed(0))
        assert z.shape == (64, 64) and 0 <= z.min() and z.max() < 1
        again = sample_latent(config, 64, rng=torch.Generator().manual_seed(0))
        assert torch.equal(z, again)


# ----------------------------------------------------------------------------------------------
# Losses against hand-computed values
# ----------------------------------------------------------------------------------------------

# M = 2 samples of one z, 2x2 images. sigmoid(ln 3) = 0.75, sigmoid(0) = 0.5.
LN3 = math.log(3.0)
LOGITS = [[0.0, LN3], [-LN3, 0.0]]
SAMPLES = [[[1.0, 1.0], [0.0, 0.0]], [[0.0, 1.0], [1.0, 1.0]]]
D_LOGITS = [0.0, LN3]  # softmax -> weights 1/4, 3/4
# D(x) = ln 3 * x[1, 0] gives D_LOGITS on SAMPLES.
CRITIC = [0.0, 0.0, LN3, 0.0]
LOG_G1 = 2 * math.log(0.5) + 2 * math.log(0.75)  # log g(x1): log .5 + log .75 + log .75 + log .5
LOG_G2 = 2 * math.log(0.5) + math.log(0.75) + math.log(0.25)


def g_loss(logits: torch.Tensor, netD: nn.Module, samples: torch.Tensor) -> dict:
    """BGAN's generator loss (:func:`weighted_log_likelihood_loss`, what ``BGAN.g_loss``
    logs and differentiates) of given ``samples`` (M x B x ...) of ``logits`` (B x ...)."""
    d_logits = netD(samples.flatten(0, 1)).view(samples.shape[:2])
    weights = importance_weights(d_logits.detach())
    return {"loss": weighted_log_likelihood_loss(logits, samples, weights),
            "ink_density": samples.mean(),
            "effective_samples": (1.0 / (weights ** 2).sum(dim=0)).mean()}


class TestHandComputed:
    def tensors(self):
        logits = torch.tensor(LOGITS, dtype=torch.float64).reshape(1, 1, 2, 2).requires_grad_()
        samples = torch.tensor(SAMPLES, dtype=torch.float64).reshape(2, 1, 1, 2, 2)
        d_logits = torch.tensor(D_LOGITS, dtype=torch.float64).reshape(2, 1)
        return logits, samples, d_logits

    def test_log_likelihood(self):
        logits, samples, _ = self.tensors()
        got = log_likelihood(logits, samples)
        assert got.shape == (2, 1) and got.dtype == torch.float64
        torch.testing.assert_close(got[:, 0], torch.tensor([LOG_G1, LOG_G2],
                                                           dtype=torch.float64))

    def test_generator_loss(self):
        logits, samples, _ = self.tensors()
        out = g_loss(logits.detach(), TableCritic(CRITIC), samples)
        expected = -(0.25 * LOG_G1 + 0.75 * LOG_G2)
        assert out["loss"].item() == pytest.approx(expected, rel=1e-6)
        assert out["ink_density"].item() == pytest.approx(5 / 8)
        # effective sample size 1 / sum w^2 = 1 / (1/16 + 9/16)
        assert out["effective_samples"].item() == pytest.approx(1.6, rel=1e-6)

    def test_one_pixel_per_z(self):
        # logits (B,) of one pixel each: log g is that pixel's log-probability.
        logits = torch.tensor([0.0, LN3], dtype=torch.float64)
        samples = torch.tensor([[1.0, 0.0], [0.0, 1.0]], dtype=torch.float64)
        expected = [[math.log(0.5), math.log(0.25)], [math.log(0.5), math.log(0.75)]]
        torch.testing.assert_close(log_likelihood(logits, samples),
                                   torch.tensor(expected, dtype=torch.float64))

    def test_weights_follow_the_sample_major_layout(self):
        # M = 3 samples of B = 2 z's, two pixels each, D(x) = x_0 + 2 x_1 (0 to 3): the
        # weights, and so the loss, come from D(fake[m * B + b]) for sample m of z_b.
        logits = torch.tensor([[0.0, 1.0], [2.0, -1.0]], dtype=torch.float64)  # B x 2 pixels
        samples = torch.tensor([[[1.0, 0.0], [0.0, 1.0]],
                                [[0.0, 0.0], [1.0, 1.0]],
                                [[1.0, 1.0], [0.0, 0.0]]], dtype=torch.float64)  # M x B x 2
        netD = TableCritic([1.0, 2.0])
        d_logits = netD(samples.flatten(0, 1)).view(3, 2)
        weights = torch.softmax(d_logits.detach(), dim=0)
        log_g = -nn.functional.binary_cross_entropy_with_logits(
            logits.expand(3, 2, 2), samples, reduction="none").sum(dim=2)
        expected = -(weights * log_g).sum(dim=0).mean()
        out = g_loss(logits, netD, samples)
        assert out["loss"].item() == pytest.approx(expected.item(), rel=1e-6)

    def test_discriminator_loss(self):
        d_real = torch.tensor([0.0, LN3], dtype=torch.float64)
        d_fake = torch.tensor([0.0, -LN3, LN3], dtype=torch.float64)
        # BCE(real, 1) = -mean log sigmoid(d); BCE(fake, 0) = -mean log(1 - sigmoid(d)).
        expected = -(log_sigmoid(0.0) + log_sigmoid(LN3)) / 2 - (
            log_sigmoid(-0.0) + log_sigmoid(LN3) + log_sigmoid(-LN3)
        ) / 3
        out = bgan().d_loss(nn.Identity(), d_real, d_fake)  # D's logits are its input
        assert out["loss"].item() == pytest.approx(expected, rel=1e-12)
        assert out["d_real"].item() == pytest.approx((0.5 + 0.75) / 2)
        assert out["d_fake"].item() == pytest.approx((0.5 + 0.25 + 0.75) / 3)

    def test_batch_mean_over_z(self):
        # Two identical z's give the loss of one: the loss is a mean over z, a sum over m.
        logits, samples, _ = self.tensors()
        one = g_loss(logits.detach(), TableCritic(CRITIC), samples)["loss"]
        two = g_loss(logits.detach().repeat(2, 1, 1, 1), TableCritic(CRITIC),
                     samples.repeat(1, 2, 1, 1, 1))
        assert two["loss"].item() == pytest.approx(one.item(), rel=1e-12)


# ----------------------------------------------------------------------------------------------
# Weights and gradients
# ----------------------------------------------------------------------------------------------


def random_problem(m=5, b=3, seed=0, dtype=torch.float64, weights="per-z"):
    """G with logits (B, 1, 2, 2), a random linear critic, and M samples per z drawn by
    ``fake``; returns the objective (fake done), G, D, z and the fakes."""
    torch.manual_seed(seed)
    netG = FixedLogits(torch.randn(b, 1, 2, 2, dtype=dtype))
    netD = TableCritic(torch.randn(4, dtype=dtype), torch.randn(()).item(), dtype=dtype)
    objective, z = bgan(m, weights), torch.zeros(b, 64)
    fake = objective.fake(netG, z)
    return objective, netG, netD, z, fake


class TestWeightsAndGradient:
    def test_weights_normalised_per_z(self):
        gen = torch.Generator().manual_seed(0)
        d_logits = torch.randn(7, 4, dtype=torch.float64, generator=gen)
        weights = importance_weights(d_logits)
        assert weights.shape == (7, 4) and weights.dtype == torch.float64
        torch.testing.assert_close(weights.sum(dim=0), torch.ones(4, dtype=torch.float64))
        torch.testing.assert_close(weights, torch.softmax(d_logits, dim=0))

    def test_weights_normalised_over_the_batch(self):
        gen = torch.Generator().manual_seed(2)
        d_logits = torch.randn(5, 3, dtype=torch.float64, generator=gen)
        weights = importance_weights(d_logits, per_z=False)
        torch.testing.assert_close(weights.sum(), torch.tensor(3.0, dtype=torch.float64))
        torch.testing.assert_close(weights, 3 * torch.softmax(d_logits.flatten(), 0).view(5, 3))
        assert not torch.allclose(weights.sum(dim=0), torch.ones(3, dtype=torch.float64))

    def test_weights_of_half_precision_logits(self):
        d_logits = torch.tensor([[0.0, 60000.0], [LN3, 60000.0]], dtype=torch.float16)
        weights = importance_weights(d_logits)
        assert weights.dtype == torch.float16 and torch.isfinite(weights).all()
        torch.testing.assert_close(weights.float(), torch.tensor([[0.25, 0.5], [0.75, 0.5]]),
                                   rtol=1e-3, atol=1e-3)

    def test_weights_invariant_to_shift_per_z(self):
        # float64 logits keep float64 precision: a shift by 300 changes nothing at 1e-12
        gen = torch.Generator().manual_seed(1)
        d_logits = torch.randn(5, 3, dtype=torch.float64, generator=gen)
        shifted = d_logits + torch.tensor([1.0, -20.0, 300.0], dtype=torch.float64)
        torch.testing.assert_close(importance_weights(shifted), importance_weights(d_logits),
                                   rtol=1e-12, atol=1e-14)
        # and so is the loss: a critic shifted by a constant gives the same L_G
        objective, netG, netD, z, fake = random_problem()
        samples = fake.view(5, *netG.l.shape)
        a = objective.g_loss(netG, netD, z, fake)["loss"]
        with torch.no_grad():
            netD.c += 300.0
        b = g_loss(netG.l, netD, samples)["loss"]
        assert a.item() == pytest.approx(b.item(), rel=1e-12)

    def test_no_gradient_to_discriminator(self):
        objective, netG, netD, z, fake = random_problem()
        objective.g_loss(netG, netD, z, fake)["loss"].backward()
        assert netG.l.grad is not None
        assert all(p.grad is None for p in netD.parameters())

    @pytest.mark.parametrize("weights", ["per-z", "batch"])
    def test_gradient_is_importance_weighted_score(self, weights):
        # dL_G/dl = -(1/B) sum_m w~_m (x_m - sigmoid(l)), w~ from D on the same samples
        objective, netG, netD, z, fake = random_problem(m=6, b=4, weights=weights)
        objective.g_loss(netG, netD, z, fake)["loss"].backward()
        samples = fake.view(6, 4, 1, 2, 2)
        with torch.no_grad():
            d_logits = netD(fake).view(6, 4)
            if weights == "per-z":
                w = torch.softmax(d_logits, dim=0)
            else:  # over all 24 samples, scaled to sum to B = 4
                w = 4 * torch.softmax(d_logits.flatten(), dim=0).view(6, 4)
            w = w.reshape(6, 4, 1, 1, 1)
        expected = -(w * (samples - torch.sigmoid(netG.l.detach()))).sum(dim=0) / 4
        torch.testing.assert_close(netG.l.grad, expected, rtol=1e-6, atol=1e-9)

    def test_stable_for_saturated_logits(self):
        logits = torch.tensor([[200.0, -200.0, 50.0, -50.0]], requires_grad=True)
        samples = torch.tensor([[[0.0, 1.0, 1.0, 0.0]], [[1.0, 0.0, 0.0, 1.0]]])
        # D: 0 on the first sample, 1 on the second
        netD = TableCritic([1.0, 0.0, 0.0, 0.0], dtype=torch.float32)
        loss = g_loss(logits, netD, samples)["loss"]
        loss.backward()
        assert math.isfinite(loss.item()) and torch.isfinite(logits.grad).all()
        # log g = -400 for sample 1 (two 200-nat pixels), -100 for sample 2 (two 50-nat
        # pixels), weights softmax(0, 1): a naive log(sigmoid) would give -inf here.
        w1 = 1 / (1 + math.e)
        assert loss.item() == pytest.approx(w1 * 400 + (1 - w1) * 100, rel=1e-6)

    @pytest.mark.parametrize("generator", ["fixed", "mlp"])
    def test_reinforce_loss_gives_the_weighted_likelihoods_gradient(self, generator):
        # BGAN's gradient written out (the weighted log-likelihood, differentiated) against
        # what g_loss backpropagates (bn.reinforce_loss with the signal -M w), on one batch.
        if generator == "fixed":
            objective, netG, netD, z, fake = random_problem(m=6, b=4)
        else:
            config = get_preset("mlp-bgan").replace(bgan_samples=6, latent_dim=8)
            torch.manual_seed(0)
            netG, netD = (net.double() for net in build_models(config))  # exact sums compared
            objective, z = BGAN(config), sample_latent(config, 4).double()
            fake = objective.fake(netG, z)
        logits = objective._drawn[1]
        per_z = objective.config.bgan_weights == "per-z"  # mlp: the preset's, over the batch
        with torch.no_grad():
            weights = importance_weights(netD(fake).view(6, 4), per_z=per_z)
        written = weighted_log_likelihood_loss(logits, fake.view(6, *logits.shape), weights)
        params = [p for p in netG.parameters()]
        expected = torch.autograd.grad(written, params, retain_graph=True)
        objective.g_loss(netG, netD, z, fake)["loss"].backward()
        for param, grad in zip(params, expected):
            torch.testing.assert_close(param.grad, grad, rtol=1e-9, atol=1e-12)

    def test_g_loss_must_follow_fake_of_the_same_z(self):
        objective, netG, netD, z, fake = random_problem(m=5, b=3)
        with pytest.raises(RuntimeError, match="must follow fake\\(netG, z\\) of the same z"):
            objective.g_loss(netG, netD, z.clone(), fake)
        # without fakes (a fresh batch), g_loss draws its own
        torch.manual_seed(3)
        out = objective.g_loss(netG, netD, z, None)
        assert math.isfinite(out["loss"].item()) and 1 <= out["effective_samples"] <= 5


# ----------------------------------------------------------------------------------------------
# Networks
# ----------------------------------------------------------------------------------------------


class TestNetworks:
    def test_dcgan_generator_shapes(self):
        config = get_preset("cnn-bgan")
        G = LogitsGenerator(config)
        z = sample_latent(config, 3)
        assert G.body[:4](z).shape == (3, 128 * 7 * 7)
        assert G.body[:7](z).shape == (3, 128, 7, 7)
        assert G.body[:8](z).shape == (3, 64, 14, 14)
        logits, samples = G(z, samples_per_z=2)
        assert logits.shape == (3, 1, 28, 28) and samples.shape == (6, 1, 28, 28)
        assert G.logits(z).shape == (3, 1, 28, 28)

    def test_dcgan_discriminator_shapes(self):
        D = DCGANDiscriminator()
        x = torch.zeros(5, 1, 28, 28)
        assert D.body[0](x).shape == (5, 64, 14, 14)
        assert D.body[:4](x).shape == (5, 128, 7, 7)
        assert D(x).shape == (5,)
        assert not any(isinstance(m, nn.modules.batchnorm._BatchNorm) for m in D.modules())

    def test_mlp_shapes_and_sizes(self):
        config = get_preset("mlp-bgan")
        G, D = build_models(config)
        assert type(G) is LogitsGenerator and type(D) is Discriminator
        assert G(sample_latent(config, 3))[1].shape == (3, 1, 28, 28)
        assert D(torch.zeros(3, 1, 28, 28)).shape == (3,)
        # BinaryGAN's MLP discriminator without BN: 784*512+512 + 512*256+256 + 256+1.
        assert sum(p.numel() for p in D.parameters()) == 533_505
        assert not any(isinstance(m, nn.modules.batchnorm._BatchNorm) for m in D.modules())
        # Generator: z -> 1024 (+ BN) -> 784 logits, without the output BN.
        expected = (64 * 1024 + 1024) + 2 * 1024 + (1024 * 784 + 784)
        assert sum(p.numel() for p in G.parameters()) == expected

    def test_a_generator_saved_before_its_output_layer_loads(self):
        G = LogitsGenerator(get_preset("mlp-bgan"))
        old = {key: value for key, value in G.state_dict().items()
               if not key.startswith("output.")}
        restored = LogitsGenerator(get_preset("mlp-bgan"))
        restored.load_state_dict(old)  # strict: nothing missing, nothing unexpected
        assert torch.equal(restored.body[0].weight, G.body[0].weight)

    def test_cnn_pair(self):
        G, D = build_models(get_preset("cnn-bgan"))
        assert type(G) is LogitsGenerator and type(D) is DCGANDiscriminator

    def test_optimizers(self):
        objective = objectives.make_objective(get_preset("mlp-bgan"))
        G, D = build_models(get_preset("mlp-bgan"))
        for opt in (objective.optimizer(G), objective.optimizer(D)):
            assert type(opt) is torch.optim.Adam
            assert opt.defaults["lr"] == 1e-3 and opt.defaults["betas"] == (0.5, 0.999)


# ----------------------------------------------------------------------------------------------
# Training step: one D update, then one G update, through the objective (as the trainer does)
# ----------------------------------------------------------------------------------------------


def bar_images(n: int) -> torch.Tensor:
    """A toy target: a horizontal bar, ink density 4/28 = 0.143."""
    images = torch.zeros(n, 1, 28, 28)
    images[:, :, 10:14, :] = 1
    return images


def make_run(seed: int, lr: float = 1e-3, arch: str = "mlp", z_dim: int = 16, m: int = 4):
    config = get_preset(f"{arch}-bgan").replace(lr=lr, latent_dim=z_dim, bgan_samples=m)
    torch.manual_seed(seed)
    G, D = build_models(config)
    objective = objectives.make_objective(config)
    return config, objective, G, D, objective.optimizer(G), objective.optimizer(D)


def bgan_step(objective, G, D, opt_g, opt_d, real, z) -> dict[str, float]:
    """The trainer's step for BGAN: critic_steps(step) = 1 D update on real vs fake(G, z), then
    one G update with g_loss on the same z and fakes, D frozen."""
    fake, d_out = update_d(objective, G, D, opt_d, real, z)
    g_out = update_g(objective, G, D, opt_g, z, fake)
    stats = {"loss_d": d_out.pop("loss"), "loss_g": g_out.pop("loss"), **d_out, **g_out}
    return {key: float(value.detach()) for key, value in stats.items()}


def run_steps(steps, seed=0, batch=16, **kwargs):
    config, objective, G, D, opt_g, opt_d = make_run(seed, **kwargs)
    real = bar_images(batch)
    history = []
    for _ in range(steps):
        z = sample_latent(config, batch)
        history.append(bgan_step(objective, G, D, opt_g, opt_d, real, z))
    return G, D, history


class TestStep:
    @pytest.mark.parametrize("arch", ["mlp", "cnn"])
    def test_one_step_updates_both(self, arch):
        config, objective, G, D, opt_g, opt_d = make_run(0, arch=arch, m=3)
        g0 = [p.detach().clone() for p in G.parameters()]
        d0 = [p.detach().clone() for p in D.parameters()]
        out = bgan_step(objective, G, D, opt_g, opt_d, bar_images(4), sample_latent(config, 4))
        assert set(out) == {"loss_d", "loss_g", "d_real", "d_fake", "ink_density",
                            "effective_samples"}
        assert all(math.isfinite(v) for v in out.values())
        assert 1.0 <= out["effective_samples"] <= 3.0
        assert all(not torch.equal(a, b) for a, b in zip(g0, G.parameters()))
        assert all(not torch.equal(a, b) for a, b in zip(d0, D.parameters()))
        assert all(p.requires_grad for p in D.parameters())  # unfrozen again

    def test_reproducible(self):
        G1, _, h1 = run_steps(5, seed=3)
        G2, _, h2 = run_steps(5, seed=3)
        _, _, h3 = run_steps(5, seed=4)
        assert h1 == h2 and h1 != h3
        for a, b in zip(G1.state_dict().values(), G2.state_dict().values()):
            assert torch.equal(a, b)

    def test_rejects_integer_real_batch(self):
        # The trainer's batches are float32 (data.BatchStream); D refuses integer images.
        config, objective, G, D, opt_g, opt_d = make_run(0)
        with pytest.raises(RuntimeError):
            bgan_step(objective, G, D, opt_g, opt_d, bar_images(2).to(torch.uint8),
                      sample_latent(config, 2))

    def test_learns_toy_target(self):
        # From density 0.5 toward the bars' 0.143 (0.28 after 100 steps when measured; the
        # full run reaches ~0.13 by step 200). lr 1e-3 instead of 1e-4 to keep this short.
        _, _, history = run_steps(100)
        assert history[0]["ink_density"] == pytest.approx(0.5, abs=0.03)
        assert history[-1]["ink_density"] < 0.36
        early = sum(h["loss_g"] for h in history[:10]) / 10
        late = sum(h["loss_g"] for h in history[-10:]) / 10
        assert late < 0.75 * early

    def test_generator_loss_descends_against_fixed_critic(self):
        # A fixed critic that prefers less ink: log w = -(number of on-pixels) / 10. Minimising
        # L_G alone must move G's samples toward it.
        config = get_preset("mlp-bgan").replace(latent_dim=8, bgan_samples=8)
        torch.manual_seed(0)
        G = LogitsGenerator(config)
        critic = TableCritic(torch.full((784,), -0.1), dtype=torch.float32)
        objective = BGAN(config)
        opt = torch.optim.Adam(G.parameters(), lr=1e-3)
        densities = []
        for _ in range(30):
            z = sample_latent(config, 8)
            fake = objective.fake(G, z)
            out = objective.g_loss(G, critic, z, fake)
            opt.zero_grad()
            out["loss"].backward()
            opt.step()
            densities.append(out["ink_density"].item())
        assert densities[-1] < densities[0] - 0.05
