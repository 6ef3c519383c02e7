"""Part 5's likelihood machinery (quadrature, accuracy, judge) against independent sources."""
import math

import pytest
import torch
import torch.nn as nn
from torch.distributions import Bernoulli

from conftest import CPU, small_fit

LOG_2PI = math.log(2 * math.pi)


def random_model(nb, seed):
    """A CVAE whose decoder output depends on z and y (not the all-zero start)."""
    torch.manual_seed(seed)
    model = nb.CVAE()
    for m in model.modules():
        if isinstance(m, (nn.Conv2d, nn.ConvTranspose2d, nn.Linear)):
            nn.init.normal_(m.weight, std=0.15)
    return model.eval()


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


def test_quadrature_weights_are_the_trapezoid_rules(nb):
    """On [-1, 1] with 5 nodes the end nodes count half: log p(x | y) of a decoder that
    ignores z is -784 ln 2 + log of the trapezoid sum of N(z; 0, I), by hand."""
    t = [-1.0, -0.5, 0.0, 0.5, 1.0]
    w = [0.25, 0.5, 0.5, 0.5, 0.25]
    one_axis = sum(wi * math.exp(-ti ** 2 / 2) / math.sqrt(2 * math.pi) for wi, ti in zip(w, t))
    out = nb.quadrature(ZeroDecoder(), torch.rand(2, 1, 28, 28), n=5, radius=1.0)
    assert torch.allclose(out, torch.full_like(out, 2 * math.log(one_axis) - 784 * math.log(2)),
                          atol=1e-4)


@pytest.fixture(scope="module")
def trained(nb, mnist, tmp_path_factory):
    (x, y), (xt, yt) = mnist
    model, _ = small_fit(nb, 1.0, ((x[:4096], y[:4096]), (xt[:500], yt[:500])),
                         tmp_path_factory.mktemp("ck"), epochs=3, warmup_epochs=1)
    return model, xt[:100], yt[:100]


def test_the_elbo_lies_below_the_converged_quadrature_on_a_trained_model(nb, trained):
    model, x, y = trained
    elbo = torch.stack([sum(nb.evaluate(model, x, y, seed)) for seed in range(20)])
    coarse = nb.nll_of_label(nb.quadrature(model, x, 31), y)
    fine = nb.nll_of_label(nb.quadrature(model, x, 61), y)
    assert (coarse - fine).abs().mean() < 0.1  # converged in the grid
    gap = elbo.mean(0).double() - fine  # -ELBO - (-log p) >= 0, up to noise
    assert gap.mean() > 3 * gap.std() / math.sqrt(len(gap))


def test_nll_of_label_picks_each_images_own_label(nb):
    log_px = torch.arange(30.0).view(3, 10)
    assert nb.nll_of_label(log_px, torch.tensor([0, 5, 9])).tolist() == [-0.0, -15.0, -29.0]


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
