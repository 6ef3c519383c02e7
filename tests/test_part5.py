"""Part 5's measures on synthetic inputs whose answer is known."""
import math

import pytest
import torch


def sheared_bar(shear, width=2):
    """A vertical bar whose column moves by `shear` per row upwards (leans right > 0)."""
    img = torch.zeros(1, 28, 28)
    for r in range(4, 24):
        c = 14 + shear * (14 - r)
        for dc in range(width):
            img[0, r, int(round(c)) + dc] = 1.0
    return img


def test_slant_orders_sheared_bars_and_measures_the_shear(nb):
    shears = [-0.4, -0.2, 0.0, 0.2, 0.4]
    values = nb.slant(torch.stack([sheared_bar(s) for s in shears])).tolist()
    assert values == sorted(values) and values[0] < 0 < values[-1]
    assert values[2] == pytest.approx(0.0, abs=1e-9)
    assert values[-1] == pytest.approx(0.4, abs=0.05)


def test_ink_mass_orders_thin_and_thick_strokes(nb):
    bars = torch.stack([sheared_bar(0.1, width=w) for w in (1, 2, 3, 4)])
    mass = nb.ink_mass(bars).tolist()
    assert mass == sorted(mass) and mass[1] == pytest.approx(2 * mass[0])


def test_latent_stats_on_synthetic_latents(nb):
    g = torch.Generator().manual_seed(0)
    mu = torch.randn(20000, 2, generator=g) * torch.tensor([1.0, 0.05])  # var 1, 0.0025
    logvar = torch.full((20000, 2), math.log(0.25))
    st = nb.latent_stats(mu, logvar)
    assert st["active_units"] == 1
    assert st["mean_sigma"] == pytest.approx([0.5, 0.5])
    assert abs(st["corr_mu0_mu1"]) < 0.03
    by_hand = 0.5 * (1.0 + 0.25 - 1 - math.log(0.25))  # E[mu^2] = 1 on axis 0
    assert st["kl_per_dim"][0] == pytest.approx(by_hand, rel=0.03)


def test_standardise_within_classes(nb):
    v = torch.tensor([1.0, 2.0, 3.0, 10.0, 20.0, 30.0], dtype=torch.float64)
    out = nb.standardise_within(v, torch.tensor([0, 0, 0, 1, 1, 1]))
    assert torch.allclose(out, torch.tensor([-1.0, 0, 1, -1, 0, 1], dtype=torch.float64))


def test_factor_alignment_score(nb):
    g = torch.Generator().manual_seed(1)
    a, b = torch.randn(5000, generator=g).double(), torch.randn(5000, generator=g).double()
    aligned, score = nb.factor_alignment(torch.stack([a, b], 1).float(),
                                         {"f": a, "g": b})
    assert aligned["f"][0] > 0.99 and aligned["f"][1] < 0.05 and score > 0.9
    mixed = torch.stack([a + b, a - b], 1).float()
    _, score_mixed = nb.factor_alignment(mixed, {"f": a, "g": b})
    assert score_mixed < 0.1
