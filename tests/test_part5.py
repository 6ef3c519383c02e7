"""Part 5's measures of the code, and the figure helpers, on inputs whose answer is known."""
import math

import pytest
import torch
import torch.nn as nn


def sheared_bar(shear, width=2):
    """A vertical bar whose column moves by `shear` per row upwards (leans right > 0)."""
    img = torch.zeros(1, 28, 28)
    for r in range(4, 24):
        c = 14 + shear * (14 - r)
        img[0, r, int(round(c)):int(round(c)) + width] = 1.0
    return img


def test_slant_orders_sheared_bars_and_measures_the_shear(nb):
    shears = [-0.4, -0.2, 0.0, 0.2, 0.4]
    values = nb.slant(torch.stack([sheared_bar(s) for s in shears])).tolist()
    assert values == sorted(values) and values[0] < 0 < values[-1]
    assert values[2] == pytest.approx(0.0, abs=1e-9)
    assert values[-1] == pytest.approx(0.4, abs=0.05)


def test_standardise_within_classes(nb):
    labels = torch.arange(30) % 10  # three of each digit
    v = (labels + 1) * 10.0 + torch.tensor([-1.0, 0.0, 1.0]).repeat_interleave(10)
    out = nb.standardise_within(v.double(), labels)
    assert torch.allclose(out, torch.tensor([-1.0, 0.0, 1.0]).double().repeat_interleave(10))


def test_code_stats_on_synthetic_latents(nb):
    g = torch.Generator().manual_seed(0)
    a, b = torch.randn(20000, generator=g), torch.randn(20000, generator=g)
    mu = torch.stack([a, 0.05 * b], 1)  # variances 1 and 0.0025
    logvar = torch.full((20000, 2), math.log(0.25))
    st = nb.code_stats(mu, logvar, {"f": a.double(), "g": b.double()})
    assert st["active units"] == 1 and abs(st["corr(mu0, mu1)"]) < 0.03
    assert st["mean sigma z0"] == pytest.approx(0.5) == st["mean sigma z1"]
    by_hand = 0.5 * (1.0 + 0.25 - 1 - math.log(0.25))  # E[mu^2] = 1 on axis 0
    assert st["KL z0"] == pytest.approx(by_hand, rel=0.03)
    assert st["f z0"] > 0.99 and st["f z1"] < 0.05 and st["g z1"] > 0.99
    assert st["alignment score"] > 0.9
    mixed = nb.code_stats(torch.stack([a + b, a - b], 1), logvar, {"f": a.double(),
                                                                  "g": b.double()})
    assert mixed["alignment score"] < 0.1


def test_knn_accuracy_on_synthetic_clusters(nb):
    g = torch.Generator().manual_seed(1)
    labels = torch.arange(4000) % 10
    centres = torch.randn(10, 2, generator=g) * 20
    separated = centres[labels] + torch.randn(4000, 2, generator=g)
    assert nb.knn_accuracy(separated, labels) > 0.99
    noise = torch.randn(4000, 2, generator=g)  # no label information at all
    assert abs(nb.knn_accuracy(noise, labels) - 0.1) < 0.03


class PixelStub(nn.Module):
    """A 'decoder' that writes z0, z1 and the label into three pixels of its image."""

    def __init__(self):
        super().__init__()
        self.dummy = nn.Parameter(torch.zeros(1))  # chunked() asks for a device

    def decode(self, z, y):
        out = torch.full((len(z), 1, 28, 28), -30.0)
        out[:, 0, 0, 0], out[:, 0, 0, 1], out[:, 0, 0, 2] = z[:, 0], z[:, 1], y.float()
        return out


def read(images, pixel):
    """Undo the sigmoid of decode_mean at one pixel."""
    return torch.logit(images[:, 0, 0, pixel].double())


def test_traversals_vary_one_axis_and_hold_the_other_at_zero(nb):
    values = torch.linspace(-3, 3, 13)
    for axis in (0, 1):
        images = nb.traversal_images(PixelStub(), axis, values)
        assert images.shape == (130, 1, 28, 28)
        z_axis = read(images, axis).view(10, 13)
        z_other, label = read(images, 1 - axis).view(10, 13), read(images, 2).view(10, 13)
        assert torch.allclose(z_axis, values.double().expand(10, 13), atol=1e-4)
        assert torch.allclose(z_other, torch.zeros(10, 13, dtype=torch.float64), atol=1e-4)
        assert torch.allclose(label, torch.arange(10.0).double()[:, None].expand(10, 13),
                              atol=1e-4)  # one row per digit


def test_manifold_z0_grows_rightward_and_z1_upward(nb):
    values = torch.linspace(-3, 3, 13)
    images = nb.manifold_images(PixelStub(), 7, values)
    z0, z1 = read(images, 0).view(13, 13), read(images, 1).view(13, 13)
    assert torch.allclose(z0[0], values.double(), atol=1e-4)  # left to right
    assert torch.allclose(z1[:, 0], values.flip(0).double(), atol=1e-4)  # top row: z1 = 3
    assert torch.allclose(read(images, 2), torch.full((169,), 7.0).double(), atol=1e-4)
