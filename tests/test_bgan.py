"""Tests of the discrete Boundary-Seeking GAN pieces (examples/binarygan/bgan.py)."""

from __future__ import annotations

import math

import pytest
import torch

from examples.binarygan import bgan


pytestmark = pytest.mark.usefixtures("one_thread")


def log_sigmoid(x: float) -> float:
    return -math.log1p(math.exp(-x))


# ----------------------------------------------------------------------------------------------
# Sampling
# ----------------------------------------------------------------------------------------------


class TestSampleBernoulli:
    def test_shape_values_no_grad(self):
        logits = torch.randn(3, 1, 2, 2, requires_grad=True)
        samples = bgan.sample_bernoulli(logits, 5, torch.Generator().manual_seed(0))
        assert samples.shape == (5, 3, 1, 2, 2) and samples.dtype == logits.dtype
        assert set(samples.unique().tolist()) <= {0.0, 1.0}
        assert not samples.requires_grad and samples.grad_fn is None

    def test_reproducible_with_generator(self):
        logits = torch.randn(4, 10)
        a = bgan.sample_bernoulli(logits, 3, torch.Generator().manual_seed(7))
        b = bgan.sample_bernoulli(logits, 3, torch.Generator().manual_seed(7))
        c = bgan.sample_bernoulli(logits, 3, torch.Generator().manual_seed(8))
        assert torch.equal(a, b) and not torch.equal(a, c)

    def test_mean_is_sigmoid(self):
        # 4,000 draws per entry: the frequency is within 5 standard errors of sigmoid(l).
        logits = torch.tensor([[-3.0, -1.0, 0.0, 0.5, 2.0, 6.0]])
        samples = bgan.sample_bernoulli(logits, 4000, torch.Generator().manual_seed(1))
        p = torch.sigmoid(logits)[0]
        freq = samples.mean(dim=0)[0]
        stderr = (p * (1 - p) / 4000).sqrt()
        assert torch.all((freq - p).abs() <= 5 * stderr + 1e-3)

    def test_samples_differ_across_m(self):
        samples = bgan.sample_bernoulli(torch.zeros(1, 100), 2, torch.Generator().manual_seed(0))
        assert not torch.equal(samples[0], samples[1])

    @pytest.mark.parametrize("m", [0, -1, 2.0, True])
    def test_bad_m(self, m):
        with pytest.raises(ValueError, match="m \\(samples per z\\) must be an integer >= 1"):
            bgan.sample_bernoulli(torch.zeros(1, 4), m)

    def test_prior(self):
        z = bgan.sample_prior(64, generator=torch.Generator().manual_seed(0))
        assert z.shape == (64, bgan.Z_DIM) and 0 <= z.min() and z.max() < 1


# ----------------------------------------------------------------------------------------------
# Losses against hand-computed values
# ----------------------------------------------------------------------------------------------

# M = 2 samples of one z, 2x2 images. sigmoid(ln 3) = 0.75, sigmoid(0) = 0.5.
LN3 = math.log(3.0)
LOGITS = [[0.0, LN3], [-LN3, 0.0]]
SAMPLES = [[[1.0, 1.0], [0.0, 0.0]], [[0.0, 1.0], [1.0, 1.0]]]
D_LOGITS = [0.0, LN3]  # softmax -> weights 1/4, 3/4


class TestHandComputed:
    def tensors(self):
        logits = torch.tensor(LOGITS, dtype=torch.float64).reshape(1, 1, 2, 2).requires_grad_()
        samples = torch.tensor(SAMPLES, dtype=torch.float64).reshape(2, 1, 1, 2, 2)
        d_logits = torch.tensor(D_LOGITS, dtype=torch.float64).reshape(2, 1)
        return logits, samples, d_logits

    def test_log_likelihood(self):
        logits, samples, _ = self.tensors()
        # x1 = [1 1; 0 0]: log .5 + log .75 + log(1 - .25) + log .5
        # x2 = [0 1; 1 1]: log .5 + log .75 + log .25 + log .5
        expected = [
            2 * math.log(0.5) + 2 * math.log(0.75),
            2 * math.log(0.5) + math.log(0.75) + math.log(0.25),
        ]
        got = bgan.bgan_log_likelihood(logits, samples)
        assert got.shape == (2, 1)
        torch.testing.assert_close(got[:, 0], torch.tensor(expected, dtype=torch.float64))

    def test_generator_loss(self):
        logits, samples, d_logits = self.tensors()
        log_g1 = 2 * math.log(0.5) + 2 * math.log(0.75)
        log_g2 = 2 * math.log(0.5) + math.log(0.75) + math.log(0.25)
        expected = -(0.25 * log_g1 + 0.75 * log_g2)
        loss = bgan.bgan_generator_loss(logits, samples, d_logits)
        assert loss.item() == pytest.approx(expected, rel=1e-12)

    def test_one_pixel_per_z(self):
        # logits (B,) of one pixel each: log g is that pixel's log-probability.
        logits = torch.tensor([0.0, LN3], dtype=torch.float64)
        samples = torch.tensor([[1.0, 0.0], [0.0, 1.0]], dtype=torch.float64)
        expected = [[math.log(0.5), math.log(0.25)], [math.log(0.5), math.log(0.75)]]
        torch.testing.assert_close(bgan.bgan_log_likelihood(logits, samples),
                                   torch.tensor(expected, dtype=torch.float64))

    def test_generator_loss_accepts_flat_d_logits(self):
        logits, samples, d_logits = self.tensors()
        reference = bgan.bgan_generator_loss(logits, samples, d_logits)
        for shape in [(2,), (2, 1), (2, 1, 1)]:
            got = bgan.bgan_generator_loss(logits, samples, d_logits.reshape(shape))
            assert got.item() == reference.item()

    def test_discriminator_loss(self):
        d_real = torch.tensor([0.0, LN3], dtype=torch.float64)
        d_fake = torch.tensor([0.0, -LN3, LN3], dtype=torch.float64)
        # BCE(real, 1) = -mean log sigmoid(d); BCE(fake, 0) = -mean log(1 - sigmoid(d)).
        expected = -(log_sigmoid(0.0) + log_sigmoid(LN3)) / 2 - (
            log_sigmoid(-0.0) + log_sigmoid(LN3) + log_sigmoid(-LN3)
        ) / 3
        got = bgan.bgan_discriminator_loss(d_real, d_fake)
        assert got.item() == pytest.approx(expected, rel=1e-12)

    def test_batch_mean_over_z(self):
        # Two identical z's give the loss of one: the loss is a mean over z, a sum over m.
        logits, samples, d_logits = self.tensors()
        one = bgan.bgan_generator_loss(logits, samples, d_logits)
        two = bgan.bgan_generator_loss(
            logits.detach().repeat(2, 1, 1, 1), samples.repeat(1, 2, 1, 1, 1),
            d_logits.repeat(1, 2),
        )
        assert two.item() == pytest.approx(one.item(), rel=1e-12)


# ----------------------------------------------------------------------------------------------
# Weights and gradients
# ----------------------------------------------------------------------------------------------


def random_problem(m=5, b=3, seed=0, dtype=torch.float64):
    gen = torch.Generator().manual_seed(seed)
    logits = torch.randn(b, 1, 2, 2, generator=gen, dtype=dtype).requires_grad_()
    samples = bgan.sample_bernoulli(logits, m, gen)
    d_logits = torch.randn(m, b, generator=gen, dtype=dtype).requires_grad_()
    return logits, samples, d_logits


class TestWeightsAndGradient:
    def test_weights_normalised_per_z(self):
        _, _, d_logits = random_problem(m=7, b=4)
        weights = bgan.importance_weights(d_logits)
        assert weights.shape == (7, 4)
        torch.testing.assert_close(weights.sum(dim=0), torch.ones(4, dtype=torch.float64))
        torch.testing.assert_close(weights, torch.softmax(d_logits.detach(), dim=0))
        assert not weights.requires_grad

    def test_weights_invariant_to_shift_per_z(self):
        logits, samples, d_logits = random_problem()
        shifted = d_logits.detach() + torch.tensor([1.0, -20.0, 300.0], dtype=torch.float64)
        a = bgan.bgan_generator_loss(logits, samples, d_logits)
        b = bgan.bgan_generator_loss(logits, samples, shifted)
        assert a.item() == pytest.approx(b.item(), rel=1e-12)

    def test_no_gradient_to_discriminator(self):
        logits, samples, d_logits = random_problem()
        bgan.bgan_generator_loss(logits, samples, d_logits).backward()
        assert d_logits.grad is None and logits.grad is not None

    def test_gradient_is_importance_weighted_score(self):
        # dL_G/dl = -(1/B) sum_m w~_m (x_m - sigmoid(l))
        logits, samples, d_logits = random_problem(m=6, b=4)
        bgan.bgan_generator_loss(logits, samples, d_logits).backward()
        w = torch.softmax(d_logits.detach(), dim=0).reshape(6, 4, 1, 1, 1)
        expected = -(w * (samples - torch.sigmoid(logits.detach()))).sum(dim=0) / 4
        torch.testing.assert_close(logits.grad, expected, rtol=1e-12, atol=1e-14)

    def test_stable_for_saturated_logits(self):
        logits = torch.tensor([[200.0, -200.0, 50.0, -50.0]], requires_grad=True)
        samples = torch.tensor([[[0.0, 1.0, 1.0, 0.0]], [[1.0, 0.0, 0.0, 1.0]]])
        loss = bgan.bgan_generator_loss(logits, samples, torch.tensor([[0.0], [1.0]]))
        loss.backward()
        assert math.isfinite(loss.item()) and torch.isfinite(logits.grad).all()
        # log g = -400 for sample 1 (two 200-nat pixels), -100 for sample 2 (two 50-nat
        # pixels), weights softmax(0, 1): a naive log(sigmoid) would give -inf here.
        w1 = 1 / (1 + math.e)
        assert loss.item() == pytest.approx(w1 * 400 + (1 - w1) * 100, rel=1e-6)

    def test_shape_errors(self):
        logits, samples, d_logits = random_problem(m=5, b=3)
        with pytest.raises(ValueError, match="samples must have shape \\(M, \\*logits.shape\\)"):
            bgan.bgan_generator_loss(logits, samples[:, :2], d_logits)
        with pytest.raises(ValueError, match="one logit per sample, M x B = 5 x 3"):
            bgan.bgan_generator_loss(logits, samples, d_logits[:4])


# ----------------------------------------------------------------------------------------------
# Networks
# ----------------------------------------------------------------------------------------------


class TestNetworks:
    def test_dcgan_generator_shapes(self):
        G = bgan.DCGANGenerator()
        z = bgan.sample_prior(3)
        assert G.dense(z).shape == (3, 128 * 7 * 7)
        assert G.deconv[0](G.dense(z).view(-1, 128, 7, 7)).shape == (3, 64, 14, 14)
        assert G(z).shape == (3, 1, 28, 28)

    def test_dcgan_discriminator_shapes(self):
        D = bgan.DCGANDiscriminator()
        x = torch.zeros(5, 1, 28, 28)
        assert D.net[0](x).shape == (5, 64, 14, 14)
        assert D.net[2](D.net[0](x)).shape == (5, 128, 7, 7)
        assert D(x).shape == (5, 1) and D(x.reshape(5, 784)).shape == (5, 1)
        assert not any(isinstance(m, torch.nn.modules.batchnorm._BatchNorm) for m in D.modules())

    def test_mlp_shapes_and_sizes(self):
        G, D = bgan.MLPGenerator(), bgan.mlp_discriminator()
        assert G(bgan.sample_prior(3)).shape == (3, 1, 28, 28)
        assert D(torch.zeros(3, 1, 28, 28)).numel() == 3
        # BinaryGAN's MLP discriminator: 784*512+512 + 512*256+256 + 256+1 (SPEC section 2).
        assert sum(p.numel() for p in D.parameters()) == 533_505
        # Generator: z -> 1024 (+ BN) -> 784 logits, without the output BN.
        expected = (64 * 1024 + 1024) + 2 * 1024 + (1024 * 784 + 784)
        assert sum(p.numel() for p in G.parameters()) == expected

    def test_optimizers(self):
        opt_g, opt_d = bgan.make_optimizers(bgan.MLPGenerator(), bgan.mlp_discriminator())
        for opt in (opt_g, opt_d):
            assert opt.defaults["lr"] == 1e-4 and opt.defaults["betas"] == (0.5, 0.999)


# ----------------------------------------------------------------------------------------------
# Training step
# ----------------------------------------------------------------------------------------------


def bar_images(n: int) -> torch.Tensor:
    """A toy target: a horizontal bar, ink density 4/28 = 0.143."""
    images = torch.zeros(n, 1, 28, 28)
    images[:, :, 10:14, :] = 1
    return images


def make_run(seed: int, lr: float = 1e-3, arch: str = "mlp", z_dim: int = 16):
    torch.manual_seed(seed)
    if arch == "mlp":
        G, D = bgan.MLPGenerator(z_dim=z_dim), bgan.mlp_discriminator()
    else:
        G, D = bgan.DCGANGenerator(z_dim=z_dim), bgan.DCGANDiscriminator()
    opt_g, opt_d = bgan.make_optimizers(G, D, lr=lr)
    return G, D, opt_g, opt_d, torch.Generator().manual_seed(seed)


def run_steps(steps, seed=0, batch=16, m=4, **kwargs):
    G, D, opt_g, opt_d, gen = make_run(seed, **kwargs)
    real = bar_images(batch)
    history = []
    for _ in range(steps):
        z = bgan.sample_prior(batch, G.z_dim, gen)
        history.append(bgan.bgan_step(G, D, opt_g, opt_d, real, z, m=m, generator=gen))
    return G, D, history


class TestStep:
    @pytest.mark.parametrize("arch", ["mlp", "dcgan"])
    def test_one_step_updates_both(self, arch):
        G, D, opt_g, opt_d, gen = make_run(0, arch=arch)
        g0 = [p.detach().clone() for p in G.parameters()]
        d0 = [p.detach().clone() for p in D.parameters()]
        out = bgan.bgan_step(G, D, opt_g, opt_d, bar_images(4), bgan.sample_prior(4, 16, gen),
                             m=3, generator=gen)
        assert set(out) == {"loss_d", "loss_g", "d_real", "d_fake", "ink_density",
                            "effective_samples"}
        assert all(isinstance(v, float) and math.isfinite(v) for v in out.values())
        assert 1.0 <= out["effective_samples"] <= 3.0
        assert all(not torch.equal(a, b) for a, b in zip(g0, G.parameters()))
        assert all(not torch.equal(a, b) for a, b in zip(d0, D.parameters()))

    def test_reproducible(self):
        G1, _, h1 = run_steps(5, seed=3)
        G2, _, h2 = run_steps(5, seed=3)
        _, _, h3 = run_steps(5, seed=4)
        assert h1 == h2 and h1 != h3
        for a, b in zip(G1.state_dict().values(), G2.state_dict().values()):
            assert torch.equal(a, b)

    def test_rejects_integer_real_batch(self):
        G, D, opt_g, opt_d, gen = make_run(0)
        with pytest.raises(ValueError, match="real_batch must be a floating tensor"):
            bgan.bgan_step(G, D, opt_g, opt_d, bar_images(2).to(torch.uint8),
                           bgan.sample_prior(2, 16), m=2, generator=gen)

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
        torch.manual_seed(0)
        G = bgan.MLPGenerator(z_dim=8)
        opt = torch.optim.Adam(G.parameters(), lr=1e-3)
        gen = torch.Generator().manual_seed(0)
        densities = []
        for _ in range(30):
            logits = G(bgan.sample_prior(8, 8, gen))
            samples = bgan.sample_bernoulli(logits, 8, gen)
            d_logits = -samples.flatten(2).sum(dim=2) / 10
            loss = bgan.bgan_generator_loss(logits, samples, d_logits)
            opt.zero_grad()
            loss.backward()
            opt.step()
            densities.append(samples.mean().item())
        assert densities[-1] < densities[0] - 0.05
