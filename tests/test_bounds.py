"""Part 5's likelihood machinery (IWAE bounds, quadrature, accuracy, judge) against
independent sources."""
import math

import pytest
import torch
import torch.nn as nn
from torch.distributions import Bernoulli

LOG_2PI = math.log(2 * math.pi)
CPU = torch.device("cpu")


def random_model(nb, seed):
    """A CVAE whose decoder output depends on z and y (not the all-zero start)."""
    torch.manual_seed(seed)
    model = nb.CVAE()
    for m in model.modules():
        if isinstance(m, (nn.Conv2d, nn.ConvTranspose2d, nn.Linear)):
            nn.init.normal_(m.weight, std=0.15)
    return model.eval()


def test_iwae_bound_on_known_weights(nb):
    log_w = torch.log(torch.tensor([[1.0, 3.0, 5.0, 7.0]], dtype=torch.float64))
    assert nb.iwae_bound(log_w, 1).item() == pytest.approx(
        sum(math.log(v) for v in (1, 3, 5, 7)) / 4)
    assert nb.iwae_bound(log_w, 2).item() == pytest.approx((math.log(2) + math.log(6)) / 2)
    assert nb.iwae_bound(log_w, 4).item() == pytest.approx(math.log(4))


def test_log_weights_by_hand_and_k1_is_the_training_elbo_estimate(nb):
    model, x, y = random_model(nb, 3), torch.rand(12, 1, 28, 28), torch.arange(12) % 10
    log_w = nb.log_weights(model, x, y, 1, torch.Generator().manual_seed(4))
    with torch.no_grad():
        mu, logvar = model.encode(x, y)
        sigma = logvar.mul(0.5).exp()
        z = mu + sigma * torch.randn(12, 2, generator=torch.Generator().manual_seed(4))
        log_px = Bernoulli(logits=model.decode(z, y), validate_args=False).log_prob(x)
        recon, _ = nb.elbo_terms(model, x, y, torch.Generator().manual_seed(4))
    log_prior = (-0.5 * z ** 2 - 0.5 * LOG_2PI).sum(1)
    log_q = (-0.5 * ((z - mu) / sigma) ** 2 - sigma.log() - 0.5 * LOG_2PI).sum(1)
    expected = log_px.flatten(1).sum(1) + log_prior - log_q
    assert torch.allclose(log_w[:, 0], expected, atol=1e-3)
    # k = 1 draws the same z as the training loss: L_1 = -(recon + sampled KL)
    assert torch.allclose(nb.iwae_bound(log_w, 1).float(), -recon - (log_q - log_prior),
                          atol=1e-3)


def test_log_weights_do_not_depend_on_the_chunking(nb, monkeypatch):
    model, x, y = random_model(nb, 5), torch.rand(9, 1, 28, 28), torch.arange(9)
    big = nb.log_weights(model, x, y, 50, torch.Generator().manual_seed(1))
    monkeypatch.setattr(nb, "INFER_BATCH", 50)  # one image per chunk
    small = nb.log_weights(model, x, y, 50, torch.Generator().manual_seed(1))
    assert big.shape == (9, 50) and torch.allclose(big, small, atol=1e-4)


def brute_force_log_px(model, x, c, n, radius=6.0):
    """log p(x | c) by the trapezoid rule, one node at a time, with Bernoulli."""
    t = torch.linspace(-radius, radius, n, dtype=torch.float64)
    w = torch.full((n,), 2 * radius / (n - 1), dtype=torch.float64)
    w[0] = w[-1] = radius / (n - 1)
    terms = []
    for i in range(n):
        for j in range(n):
            with torch.no_grad():
                logits = model.decode(torch.tensor([[t[i], t[j]]]).float(), torch.tensor([c]))
            log_px = Bernoulli(logits=logits, validate_args=False).log_prob(x)
            terms.append(log_px.flatten(1).sum(1).double() - 0.5 * (t[i] ** 2 + t[j] ** 2)
                         - LOG_2PI + math.log(w[i] * w[j]))
    return torch.logsumexp(torch.stack(terms), 0)


def test_quadrature_equals_a_node_by_node_sum(nb):
    model, x = random_model(nb, 6), torch.rand(3, 1, 28, 28)
    out = nb.quadrature(model, x, n=13)
    assert out.shape == (3, 10)
    for c in (0, 7):
        assert torch.allclose(out[:, c], brute_force_log_px(model, x, c, 13), atol=2e-3)
    assert not torch.allclose(out[:, 0], out[:, 7])


class ZeroDecoder(nn.Module):
    """Logits 0 whatever z and y: p(x | z, y) = 2^-784 for every z."""

    def __init__(self):
        super().__init__()
        self.dummy = nn.Parameter(torch.zeros(1))  # chunked() asks for a device

    def decode(self, z, y):
        return torch.zeros(len(z), 1, 28, 28)


def test_quadrature_of_a_decoder_that_ignores_z_is_exact(nb):
    """log p(x | y) = -784 ln 2 plus the log of the summed weights, which integrate
    N(0, I) over [-6, 6]^2."""
    model, x = ZeroDecoder(), torch.rand(5, 1, 28, 28)
    for n in (25, 121):
        out = nb.quadrature(model, x, n)
        assert torch.allclose(out, torch.full_like(out, -784 * math.log(2)), atol=1e-3)
    # a spacing of 2 is too coarse even for N(0, I): the 7 x 7 weights sum to 1.029
    coarse = nb.quadrature(model, x, 7)
    assert torch.allclose(coarse, torch.full_like(coarse, math.log(1.0289) - 784 * math.log(2)),
                          atol=1e-3)


@pytest.fixture(scope="module")
def trained(nb, mnist, tmp_path_factory):
    (x, y), (xt, yt) = mnist
    model, _ = nb.fit(1.0, ((x[:4096], y[:4096]), (xt[:500], yt[:500])), CPU, epochs=3,
                      warmup_epochs=1, ckpt_dir=tmp_path_factory.mktemp("ck"),
                      log=lambda m: None)
    return model, xt[:100], yt[:100]


def test_bounds_are_ordered_on_a_trained_model(nb, trained):
    model, x, y = trained
    own = lambda log_p: log_p.gather(1, y[:, None])[:, 0]
    recon, kl = nb.evaluate(model, x, y)
    log_w = nb.log_weights(model, x, y, 100, torch.Generator().manual_seed(0))
    coarse, fine = own(nb.quadrature(model, x, 31)), own(nb.quadrature(model, x, 61))
    assert (coarse - fine).abs().mean() < 0.1  # converged in the grid
    bounds = [-(recon + kl).double()] + [nb.iwae_bound(log_w, k) for k in (1, 10, 100)]
    for lower, upper in zip(bounds, bounds[1:] + [fine]):
        d = upper - lower
        assert d.mean() > -3 * d.std() / math.sqrt(len(d)), (d.mean(), d.std())
    gap_1, gap_100 = fine - bounds[1], fine - bounds[-1]
    assert gap_1.mean() > 3 * gap_1.std() / math.sqrt(len(x))  # L_1 is not tight ...
    assert abs(gap_100.mean()) < 0.1                             # ... L_100 nearly is


def test_paired_summary_by_hand(nb):
    v, ref = torch.tensor([3.0, 5.0, 10.0]), torch.tensor([1.0, 2.0, 3.0])
    s = nb.paired(v, ref)  # gaps 2, 3, 7
    assert s["value"] == pytest.approx(6.0) and s["gap"] == pytest.approx(4.0)
    assert s["median"] == 3.0 and s["SE"] == pytest.approx(math.sqrt(7.0 / 3))


def test_per_digit_accuracy(nb):
    target = torch.tensor([0, 0, 1, 1, 2, 3, 4, 5, 6, 7, 8, 9])
    pred = torch.tensor([0, 1, 1, 1, 2, 3, 4, 5, 6, 7, 8, 0])
    acc = nb.per_digit_accuracy(pred, target)
    assert list(acc.values()) == pytest.approx([50, 100, 100, 100, 100, 100, 100, 100, 100,
                                                0, 100 * 10 / 12])
    assert list(acc) == [*range(10), "all"]


def test_print_table_aligns_its_columns(nb, capsys):
    nb.print_table("title", {"a": {"x": 1.0, "y": 22.5}, "bb": {"x": 3.25, "y": -4.0}})
    lines = capsys.readouterr().out.splitlines()
    assert lines[0] == "title" and len({len(line) for line in lines[1:]}) == 1
    assert lines[1].split() == ["x", "y"] and lines[3].split() == ["bb", "3.25", "-4.00"]
    assert lines[1].index("y") == lines[3].index("-4.00") + 4  # right-aligned


def test_the_judge_learns_digits(nb, mnist):
    (x, y), (xt, yt) = mnist
    judge = nb.train_judge(x[:4096], y[:4096], CPU, epochs=2, seed=1)
    pred = nb.predict(judge, xt[:1000])
    assert not judge.training and pred.shape == (1000,)
    assert (pred == yt[:1000]).float().mean() > 0.9
