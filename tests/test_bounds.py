"""Part 5's likelihood by quadrature, the decoder without a code, and `measure`,
against independent sources."""
import math

import pytest
import torch
from torch.distributions import Bernoulli

from conftest import small_fit
from helpers import Stub, random_weights

LOG_2PI = math.log(2 * math.pi)


def brute_force_log_px(model, x, label, n, radius=6.0):
    """log p(x | label) by the trapezoid rule, one node at a time, with Bernoulli."""
    t = torch.linspace(-radius, radius, n, dtype=torch.float64)
    w = torch.full((n,), 2 * radius / (n - 1), dtype=torch.float64)
    w[0] = w[-1] = radius / (n - 1)
    terms = []
    for i in range(n):
        for j in range(n):
            with torch.no_grad():
                z = torch.tensor([[t[i], t[j]]]).float()
                logits = model.decode(z, torch.tensor([label]))
            log_px = Bernoulli(logits=logits, validate_args=False).log_prob(x)
            terms.append(log_px.flatten(1).sum(1).double() - 0.5 * (t[i] ** 2 + t[j] ** 2)
                         - LOG_2PI + math.log(w[i] * w[j]))
    return torch.logsumexp(torch.stack(terms), 0)


def test_quadrature_equals_a_node_by_node_sum(nb):
    torch.manual_seed(6)
    model = random_weights(nb.CVAE(), std=0.15).eval()
    x = torch.rand(3, 1, 28, 28)
    out = nb.quadrature(model, x, step=1.0)  # 13 nodes per axis
    assert out.shape == (3, 10)
    for label in (0, 7):
        assert torch.allclose(out[:, label], brute_force_log_px(model, x, label, 13),
                              atol=2e-3)
    assert not torch.allclose(out[:, 0], out[:, 7])


class ZeroDecoder(Stub):
    """Logits 0 whatever z and y: p(x | z, y) = 2^-784 for every z."""

    def decode(self, z, y):
        return torch.zeros(len(z), 1, 28, 28)


def test_quadrature_of_a_decoder_that_ignores_z_is_exact(nb):
    """log p(x | y) = -784 ln 2 plus the log of the summed weights, which integrate
    N(0, I) over [-6, 6]^2."""
    x = torch.rand(5, 1, 28, 28)
    for step in (0.5, 0.1):
        out = nb.quadrature(ZeroDecoder(), x, step)
        assert torch.allclose(out, torch.full_like(out, -784 * math.log(2)), atol=1e-3)
    # a spacing of 2 is too coarse even for N(0, I): the 7 x 7 weights sum to 1.029
    coarse = nb.quadrature(ZeroDecoder(), x, 2.0)
    expected = math.log(1.0289) - 784 * math.log(2)
    assert torch.allclose(coarse, torch.full_like(coarse, expected), atol=1e-3)


def test_quadrature_weights_are_the_trapezoid_rules(nb):
    """On [-1, 1] with 5 nodes the end nodes count half: log p(x | y) of a decoder that
    ignores z is -784 ln 2 + log of the trapezoid sum of N(z; 0, I), by hand."""
    t = [-1.0, -0.5, 0.0, 0.5, 1.0]
    w = [0.25, 0.5, 0.5, 0.5, 0.25]
    one_axis = sum(wi * math.exp(-ti ** 2 / 2) / math.sqrt(2 * math.pi) for wi, ti in zip(w, t))
    out = nb.quadrature(ZeroDecoder(), torch.rand(2, 1, 28, 28), step=0.5, radius=1.0)
    expected = 2 * math.log(one_axis) - 784 * math.log(2)
    assert torch.allclose(out, torch.full_like(out, expected), atol=1e-4)


@pytest.fixture(scope="module")
def trained(nb, mnist, tmp_path_factory):
    """A CVAE of 4 epochs on 8,192 images, and 100 test images."""
    x, y = mnist["train"]
    x_val, y_val = mnist["test"]
    data = ((x[:8192], y[:8192]), (x_val[:500], y_val[:500]))
    model, _ = small_fit(nb, 1.0, data, tmp_path_factory.mktemp("ck"), epochs=4,
                         warmup_epochs=1)
    return model, x_val[:100], y_val[:100]


def own_label_nll(log_px, y):
    return -log_px[torch.arange(len(y)), y]


def test_the_quadrature_converges_and_the_elbo_lies_below_it(nb, trained):
    """Halving the spacing from h = 0.2 (61 nodes) to 0.1 (121 nodes, the notebook's)
    moves -log p(x|y) by less than 0.01 nats per image on this small model (make seeds
    checks 0.1 against 0.05 on every full model); the -ELBO, averaged over 20 noise
    draws, lies above."""
    model, x, y = trained
    h2 = own_label_nll(nb.quadrature(model, x, 0.2), y)
    h1 = own_label_nll(nb.quadrature(model, x, 0.1), y)
    assert (h2 - h1).abs().max() < 0.01
    elbo = torch.stack([sum(nb.evaluate(model, x, y, seed)) for seed in range(20)])
    gap = elbo.mean(0).double() - h1  # -ELBO - (-log p) >= 0, up to noise
    assert gap.mean() > 3 * gap.std() / math.sqrt(len(gap))


class MeanImageDecoder(Stub):
    """A decoder that ignores z: the logits of each digit's mean image."""

    def __init__(self, p):
        super().__init__()
        self.logits = torch.logit(p)

    def decode(self, z, y):
        return self.logits[y]


def test_no_code_nll_is_the_bernoulli_likelihood_of_the_digits_mean_image(nb, mnist):
    """By hand with torch.distributions.Bernoulli, and by the quadrature of a
    decoder that ignores z (its log p(x | y) is the same for every z)."""
    (x_tr, y_tr), (x, y) = mnist["train"], mnist["test"]
    x, y = x[:50], y[:50]
    p = torch.stack([x_tr[y_tr == d].mean(0) for d in range(10)]).clamp(1e-4, 1 - 1e-4)
    grey = Bernoulli(probs=p[y].double(), validate_args=False)  # x in [0, 1]
    by_hand = -grey.log_prob(x.double()).flatten(1).sum(1)
    assert nb.no_code_nll(x_tr, y_tr, x, y) == pytest.approx(by_hand.mean().item(), rel=1e-5)
    quad = own_label_nll(nb.quadrature(MeanImageDecoder(p), x, 0.5), y)
    assert quad.mean().item() == pytest.approx(by_hand.mean().item(), abs=0.01)
    assert nb.no_code_nll(x_tr, y_tr, x, (y + 1) % 10) > by_hand.mean().item() + 10


def test_percent_correct_by_hand(nb):
    predicted = torch.tensor([0, 1, 1, 1, 2, 3, 4, 5])
    truth = torch.tensor([0, 0, 1, 1, 2, 3, 4, 9])
    assert nb.percent_correct(predicted, truth) == pytest.approx(100 * 6 / 8)


def test_measure_reports_each_number_from_its_source(nb, trained):
    """Every entry of measure() against the same quantity computed here from the
    notebook's building blocks or torch, so that a swapped, mis-signed or
    mislabelled entry fails: the names are the ones LABELS shows."""
    model, x, y = trained
    factors = nb.within_digit(nb.factor_table(x), y)
    m = nb.measure(model, x, y, factors=factors, seed=3, quad_step=0.5)
    assert set(m) == set(nb.LABELS)  # every measure has its label, no more
    recon, kl = nb.evaluate(model, x, y, 3)
    nll = own_label_nll(nb.quadrature(model, x, 0.5), y)
    mu, logvar = model.encode(x, y)
    assert m["neg_elbo"] == pytest.approx((recon + kl).mean().item(), rel=1e-5)
    assert m["neg_log_px"] == pytest.approx(nll.mean().item(), rel=1e-5)
    assert m["elbo_gap"] == pytest.approx(m["neg_elbo"] - m["neg_log_px"], abs=1e-3)
    assert m["kl"] == pytest.approx(kl.mean().item(), rel=1e-5)
    assert m["mean_sigma"] == pytest.approx((0.5 * logvar).exp().mean().item(), rel=1e-5)
    assert m["mu_rms"] == pytest.approx(mu.pow(2).mean().sqrt().item(), rel=1e-5)
    code = nb.code_measures(mu.detach(), factors, y)
    for name, value in code.items():
        assert m[name] == pytest.approx(value, rel=1e-6), name
