"""Part 5's likelihood machinery (IWAE bounds, quadrature, judge) against independent sources."""
import math

import pytest
import torch
import torch.nn as nn
from torch.distributions import Bernoulli

LOG_2PI = math.log(2 * math.pi)


def random_model(nb, seed):
    """A CVAE whose decoder output depends on z and y (not the all-zero start)."""
    torch.manual_seed(seed)
    model = nb.CVAE()
    for m in model.modules():
        if isinstance(m, (nn.Conv2d, nn.ConvTranspose2d, nn.Linear)):
            nn.init.normal_(m.weight, std=0.15)
    return model.eval()


@pytest.mark.parametrize("n", [25, 121])
def test_trapezoid_weights_integrate_the_prior(nb, n):
    z, log_w = nb.trapezoid_grid(n, 6.0)
    w = log_w.exp()
    assert z.shape == (n * n, 2) and z.min() == -6 and z.max() == 6
    assert abs(w.sum().item() - 1) < 1e-6                   # int N(0, I) dz = 1
    assert abs((w * z[:, 0] ** 2).sum().item() - 1) < 1e-6  # E[z0^2] = 1
    assert abs((w * z[:, 0] * z[:, 1]).sum().item()) < 1e-12
    # E[exp(z1)] = exp(1/2), the log-normal mean
    assert (w * z[:, 1].exp()).sum().item() == pytest.approx(math.exp(0.5), rel=1e-5)


def test_trapezoid_grid_rejects_bad_arguments(nb):
    for n, r in ((1, 6.0), (10.5, 6.0), (21, 0.0)):
        with pytest.raises(ValueError, match="bad grid"):
            nb.trapezoid_grid(n, r)


def test_iwae_bound_on_known_weights(nb):
    log_w = torch.log(torch.tensor([[1.0, 3.0, 5.0, 7.0]], dtype=torch.float64))
    assert nb.iwae_bound(log_w, 1).item() == pytest.approx(
        sum(math.log(v) for v in (1, 3, 5, 7)) / 4)
    assert nb.iwae_bound(log_w, 2).item() == pytest.approx((math.log(2) + math.log(6)) / 2)
    assert nb.iwae_bound(log_w, 4).item() == pytest.approx(math.log(4))


def test_log_weights_by_hand_and_k1_is_the_elbo_estimator(nb):
    model, x, y = random_model(nb, 3), torch.rand(12, 1, 28, 28), torch.arange(12) % 10
    log_w = nb.log_weights(model, x, y, 1, torch.Generator().manual_seed(4))
    recon, _ = nb.loss_terms(model, x, y, torch.Generator().manual_seed(4))
    with torch.no_grad():
        mu, logvar = model.encode(x, y)
    sigma = logvar.mul(0.5).exp()
    z = mu + sigma * torch.randn(12, 2, generator=torch.Generator().manual_seed(4))
    log_prior = (-0.5 * z ** 2 - 0.5 * LOG_2PI).sum(1)
    log_q = (-0.5 * ((z - mu) / sigma) ** 2 - sigma.log() - 0.5 * LOG_2PI).sum(1)
    with torch.no_grad():
        logits = model.decode(z, y)
    log_px = Bernoulli(logits=logits, validate_args=False).log_prob(x).flatten(1).sum(1)
    assert torch.allclose(log_w[:, 0].float(), (log_px + log_prior - log_q).detach(),
                          atol=1e-3)
    # k = 1: the same draw as the training loss; L_1 = -(recon + sampled KL)
    assert torch.allclose(nb.iwae_bound(log_w, 1).float(),
                          (-recon - (log_q - log_prior)).detach(), atol=1e-3)


def test_quadrature_equals_brute_force_sum_over_nodes(nb):
    model, x = random_model(nb, 6), torch.rand(3, 1, 28, 28)
    n, r = 13, 6.0
    grid = nb.decode_grid(model, n, r)
    out = nb.grid_log_px(grid, x, r)
    t = torch.linspace(-r, r, n, dtype=torch.float64)
    dt = torch.full((n,), 2 * r / (n - 1), dtype=torch.float64)
    dt[0] = dt[-1] = r / (n - 1)
    for c in (0, 7):
        terms = []
        for i in range(n):
            for j in range(n):
                z = torch.tensor([[t[i], t[j]]], dtype=torch.float32)
                with torch.no_grad():
                    logits = model.decode(z, torch.tensor([c]))
                log_px = Bernoulli(logits=logits, validate_args=False).log_prob(x)
                log_pz = -0.5 * (t[i] ** 2 + t[j] ** 2) - LOG_2PI
                terms.append(log_px.flatten(1).sum(1).double() + log_pz
                             + math.log(dt[i] * dt[j]))
        expected = torch.logsumexp(torch.stack(terms), 0)
        assert torch.allclose(out[:, c], expected, atol=2e-3), c
    assert not torch.allclose(out[:, 0], out[:, 7])
    coarse = nb.grid_log_px(grid, x, r, step=2)                 # the 7 x 7 sub-grid
    assert out.shape == coarse.shape == (3, 10) and torch.all(coarse != out)
    own = nb.grid_log_px(grid, x, r, labels=torch.tensor([7, 0, 7]))
    assert torch.equal(own, out[torch.arange(3), torch.tensor([7, 0, 7])])


def test_quadrature_of_a_decoder_that_ignores_z_is_exact(nb):
    model = nb.CVAE().eval()  # final conv all zero: p(x | z, y) = 2^-784 for every z
    grid, x = nb.decode_grid(model, 25, 6.0), torch.rand(5, 1, 28, 28)
    for step in (1, 2):
        out = nb.grid_log_px(grid, x, 6.0, step)
        assert torch.allclose(out, torch.full_like(out, -784 * math.log(2)), atol=1e-3)
    # spacing 2 is too coarse even for N(0, I): the weights of 7 x 7 nodes sum to 1.029
    coarse = torch.logsumexp(nb.trapezoid_grid(7, 6.0)[1], 0).item()
    assert coarse == pytest.approx(0.0285, abs=1e-3)
    out = nb.grid_log_px(grid, x, 6.0, step=4)
    assert torch.allclose(out, torch.full_like(out, coarse - 784 * math.log(2)))


def test_quadrature_rejects_steps_that_do_not_divide_the_grid(nb):
    grid = torch.zeros(10, 25 * 25, 784)
    with pytest.raises(ValueError, match="must divide"):
        nb.grid_log_px(grid, torch.rand(1, 1, 28, 28), step=5)
    with pytest.raises(ValueError, match="must divide"):
        nb.grid_log_px(torch.zeros(10, 24, 784), torch.rand(1, 1, 28, 28))


@pytest.fixture(scope="module")
def trained(nb, mnist, tmp_path_factory):
    (x, y), (xt, yt) = mnist
    cfg = nb.Config(epochs=3, warmup_epochs=1, train_subset=4096)
    model, _ = nb.fit(1.0, ((x[:4096], y[:4096]), (xt[:500], yt[:500])), cfg,
                      torch.device("cpu"), ckpt_dir=tmp_path_factory.mktemp("ck"), log=lambda m: None)
    return model, xt[:200], yt[:200]


def test_bounds_are_ordered_on_a_trained_model(nb, trained):
    model, x, y = trained
    x, y, gen = x[:100], y[:100], torch.Generator().manual_seed(0)
    recon, kl = nb.negative_elbo(model, x, y, gen)
    log_w = nb.log_weights(model, x, y, 100, gen)
    grid = nb.decode_grid(model, 61, 6.0)
    own = [nb.grid_log_px(grid, x, 6.0, step, labels=y) for step in (2, 1)]
    assert (own[0] - own[1]).abs().mean() < 0.1                 # converged in the grid
    bounds = [-(recon + kl)] + [nb.iwae_bound(log_w, k) for k in (1, 10, 100)]
    for lower, upper in zip(bounds, bounds[1:] + [own[1]]):
        d = upper - lower
        assert d.mean() > -3 * d.std() / math.sqrt(len(d)), (d.mean(), d.std())
    gap_1, gap_100 = own[1] - bounds[1], own[1] - bounds[-1]
    assert gap_1.mean() > 3 * gap_1.std() / math.sqrt(len(x))  # L_1 is not tight ...
    assert abs(gap_100.mean()) < 0.05                           # ... L_100 nearly is


def test_negative_elbo_agrees_with_the_training_evaluation(nb, trained):
    model, x, y = trained
    recon, kl = nb.negative_elbo(model, x, y, torch.Generator().manual_seed(9))
    loss, r, k = nb.evaluate(model, x, y, 1.0, seed=9)
    assert (recon + kl).mean().item() == pytest.approx(loss, rel=1e-6)
    assert kl.mean().item() == pytest.approx(k, rel=1e-6)


def test_evaluation_does_not_depend_on_the_inference_batch(nb, trained):
    # batches of a multiple of 8 images draw the same noise as one big batch
    model, x, y = trained
    runs = [nb.evaluate(model, x, y, 1.0, seed=9, batch=b) for b in (nb.INFER_BATCH, 200, 40)]
    for run in runs[1:]:
        assert run == pytest.approx(runs[0], rel=1e-6)
    mus = [nb.encode_mean(model, x, y, batch=b)[0] for b in (nb.INFER_BATCH, 40)]
    assert torch.equal(*mus)


def test_per_digit_accuracy(nb):
    target = torch.tensor([0, 0, 1, 1, 2, 3, 4, 5, 6, 7, 8, 9])
    pred = torch.tensor([0, 1, 1, 1, 2, 3, 4, 5, 6, 7, 8, 0])
    per, overall = nb.per_digit_accuracy(pred, target)
    assert per == [50, 100, 100, 100, 100, 100, 100, 100, 100, 0]
    assert overall == pytest.approx(100 * 10 / 12)
    line = nb.accuracy_line("m", per, overall)
    assert line.split() == ["m", "50.0"] + ["100.0"] * 8 + ["0.0", "83.33"]
    assert len(nb.ACC_HEADER) == len(line)


def test_the_judge_learns_digits(nb, mnist):
    (x, y), (xt, yt) = mnist
    judge = nb.train_judge(x[:4096], y[:4096], torch.device("cpu"), epochs=2, seed=1)
    pred = nb.predict(judge, xt[:1000])
    assert not judge.training and pred.shape == (1000,)
    assert (pred == yt[:1000]).float().mean() > 0.9
