"""The measures of the digits (Part 4) and of the code (Part 5), and the figure
helpers, on inputs whose answer is known."""
import math

import pytest
import torch
import torch.nn.functional as F

from helpers import Stub, random_weights


def bar(width=3, height=16, shear=0.0, size=28):
    """A vertical bar `width` pixels wide; its column moves by `shear` per row upwards
    (it leans right for shear > 0)."""
    img = torch.zeros(1, size, size)
    for r in range(size // 2 - height // 2, size // 2 + height // 2):
        c = size / 2 + shear * (size / 2 - r) - width / 2
        img[0, r, int(round(c)):int(round(c)) + width] = 1.0
    return img


def ring(radius, thickness):
    yy, xx = torch.meshgrid(torch.arange(28.0), torch.arange(28.0), indexing="ij")
    r = ((yy - 13.5) ** 2 + (xx - 13.5) ** 2).sqrt()
    return ((r > radius - thickness / 2) & (r < radius + thickness / 2)).float()[None]


def test_the_measures_are_named_and_one_per_image(nb):
    m = nb.morphometrics(torch.stack([bar(), bar(4)]))
    assert m._fields == ("slant", "width", "height", "area")
    assert all(value.shape == (2,) for value in m)
    assert nb.factor_table(torch.stack([bar(), bar(4)])).shape == (2, 4)
    assert torch.equal(nb.factor_table(torch.stack([bar(), bar(4)]))[:, 1], m.width)


@pytest.mark.parametrize("width", [2, 3, 4, 6])
def test_upright_bars_width_height_and_area(nb, width):
    """Tolerances: width within half a pixel (bicubic upsampling widens an edge by a
    quarter pixel), height 98 % of the bar's (2 % of the ink is left outside) within 0.6
    pixel, area within 6 %, slant zero."""
    m = nb.Morphometrics(*nb.factor_table(bar(width)[None])[0])
    assert m.slant == pytest.approx(0.0, abs=1e-9)
    assert m.width == pytest.approx(width, abs=0.5)
    assert m.height == pytest.approx(0.98 * 16, abs=0.6)
    assert m.area == pytest.approx(16 * width, rel=0.06)


@pytest.mark.parametrize("shear", [-0.4, -0.2, 0.2, 0.4])
def test_sheared_bars_slant_is_the_shears_arctan_and_the_rest_barely_moves(nb, shear):
    """A bar sheared by s leans by arctan(s) (within 0.03 rad); de-slanting restores the
    upright width (within a pixel: the rows' rounding makes steps) and the height."""
    both = nb.factor_table(torch.stack([bar(3), bar(3, shear=shear)]))
    upright = nb.Morphometrics(*both[0])
    sheared = nb.Morphometrics(*both[1])
    assert sheared.slant == pytest.approx(math.atan(shear), abs=0.03)
    assert sheared.width == pytest.approx(upright.width.item(), abs=1.0)
    assert sheared.height == pytest.approx(upright.height.item(), abs=0.5)


@pytest.mark.parametrize("radius, thickness", [(8, 2), (8, 4), (10, 3)])
def test_rings_size(nb, radius, thickness):
    """A ring: width = height = outer diameter within a pixel, no slant."""
    m = nb.Morphometrics(*nb.factor_table(ring(radius, thickness)[None])[0])
    assert m.width == pytest.approx(2 * radius + thickness, abs=1.0)
    assert m.height == pytest.approx(m.width.item(), abs=0.3)
    assert m.slant == pytest.approx(0.0, abs=0.01)


def test_first_training_digit_against_morpho_mnists_published_values(nb, mnist):
    """Morpho-MNIST's released measures of training image 0 (its tests/test_measure.py):
    slant 0.231, width 14.54, height 19.85, area 107.3. Ours (no scikit-image: bicubic
    instead of its pyramid upsampling) lie within 5 %."""
    m = nb.Morphometrics(*nb.factor_table(mnist["train"][0][:1])[0])
    assert [v.item() for v in m] == pytest.approx([0.231, 14.54, 19.85, 107.3], rel=0.05)


def test_mnist_digits_sheared_get_slanted_and_dilated_get_wider(nb, mnist):
    """On 200 test digits: a shear moves the slant by its arctan and barely the height; a
    3 x 3 dilation widens each digit by about two pixels and keeps its slant."""
    x = mnist["test"][0][:200]
    before = nb.factor_table(x)
    theta = torch.tensor([[1.0, 0.3, 0.0], [0.0, 1.0, 0.0]]).expand(200, 2, 3)  # top right
    grid = F.affine_grid(theta, list(x.shape), align_corners=False)
    moved = nb.factor_table(F.grid_sample(x, grid, align_corners=False)) - before
    moved = nb.Morphometrics(*moved.T)
    assert moved.slant.median() == pytest.approx(math.atan(0.3), abs=0.08)  # leans right
    assert moved.height.abs().median() < 0.5
    dilated = nb.Morphometrics(*(nb.factor_table(F.max_pool2d(x, 3, 1, 1)) - before).T)
    assert dilated.width.median() == pytest.approx(2.0, abs=0.5)
    assert dilated.slant.abs().median() < 0.05 and (dilated.area > 0).all()


def test_within_digit_standardises_each_factor_within_each_digit(nb, mnist):
    x, y = mnist["test"][0][:300], mnist["test"][1][:300]
    raw = nb.factor_table(x)
    factors = torch.stack(nb.within_digit(raw, y), 1)
    for digit in (0, 7):
        group = raw[y == digit]
        expected = (group - group.mean(0)) / group.std(0)
        assert torch.allclose(factors[y == digit], expected)
    assert not torch.allclose(factors, (raw - raw.mean(0)) / raw.std(0))  # not pooled
    mean, sd = nb.digit_stats(raw, y)
    assert torch.allclose(sd[7], raw[y == 7].std(0)) and torch.allclose(mean[0], raw[y == 0].mean(0))


def four_factors(n=5000, seed=1):
    g = torch.Generator().manual_seed(seed)
    return torch.randn(n, 4, generator=g, dtype=torch.float64)


def turned(a, b, degrees):
    """A code whose axes are turned by `degrees`: a grows along (cos, sin), b
    along (-sin, cos)."""
    t = math.radians(degrees)
    return torch.stack([a * math.cos(t) - b * math.sin(t),
                        a * math.sin(t) + b * math.cos(t)], 1)


@pytest.mark.parametrize("degrees, to_axis", [(0, 0), (17, 17), (45, 45), (72, 18),
                                              (100, 10), (-30, 30)])
def test_a_turned_code_of_slant_and_width_gives_its_angle_back(nb, degrees, to_axis):
    """mu built as a known rotation of (slant, width), shifted: both fully
    informative (the fit has an intercept), their directions at right angles,
    the slant direction at the rotation's angle to the nearest axis."""
    factors = four_factors() + 1.0  # off-centre, as a code and factors may be
    y = torch.arange(len(factors)) % 10
    mu = turned(factors[:, 0], factors[:, 1], degrees) + torch.tensor([3.0, -2.0])
    m = nb.code_measures(mu.float(), nb.Morphometrics(*factors.T), y)
    assert m["r2_slant"] == pytest.approx(1.0, abs=1e-6)
    assert m["r2_width"] == pytest.approx(1.0, abs=1e-6)
    assert m["r2_area"] == pytest.approx(0.0, abs=0.005)  # not in the code
    assert m["slant_width_angle"] == pytest.approx(90.0, abs=1e-3)
    assert m["slant_to_axis"] == pytest.approx(to_axis, abs=1e-3)


@pytest.mark.parametrize("between", [30.0, 60.0, 90.0, 150.0])
def test_the_angle_between_slant_and_width_directions(nb, between):
    """Slant grows along (1, 0), width along a direction `between` degrees away
    (the angle of two lines is at most 90)."""
    factors = four_factors()
    t = math.radians(between)
    basis = torch.tensor([[1.0, 0.0], [math.cos(t), math.sin(t)]], dtype=torch.float64)
    mu = factors[:, :2] @ torch.linalg.inv(basis).T  # slant = mu . e0, width = mu . (cos, sin)
    m = nb.code_measures(mu.float(), nb.Morphometrics(*factors.T), torch.arange(5000) % 10)
    assert m["slant_width_angle"] == pytest.approx(min(between, 180 - between), abs=1e-3)
    assert m["slant_to_axis"] == pytest.approx(0.0, abs=1e-3)


def test_a_code_without_information_scores_at_chance(nb):
    """mu drawn independently of the images: nothing of the factors (R^2 about
    2/N), the digit at about one in ten, and over many draws the slant
    direction's angle to the axes averages 22.5 (uniform on [0, 45])."""
    factors = nb.Morphometrics(*four_factors(10000).T)
    y = torch.arange(10000) % 10
    runs = [nb.code_measures(nb.prior_draw(10000, s), factors, y) for s in range(200)]
    for name in ("r2_slant", "r2_width", "r2_area"):
        assert max(run[name] for run in runs) < 0.003
    # a little above 10: each code pulls its own digit's mean towards itself
    assert 10.0 < sum(run["digit_from_mu"] for run in runs) / 200 < 11.5
    angles = torch.tensor([run["slant_to_axis"] for run in runs])
    assert angles.mean().item() == pytest.approx(22.5, abs=2.0)
    assert angles.min() < 3 and angles.max() > 42  # all of [0, 45] is reached
    chance = nb.chance_values(factors, y, no_code=123.0, seed=0)
    assert chance["r2_slant"] < 0.003 and chance["slant_to_axis"] == 22.5
    assert chance["neg_log_px"] == chance["neg_elbo"] == 123.0 and chance["kl"] == 0
    assert chance["mean_sigma"] == 1.0 and chance["mu_rms"] == 0.0
    assert set(chance) == set(nb.LABELS)


def test_digit_from_mu_gives_each_image_the_digit_of_the_nearest_mean(nb):
    """Codes near their digit's own centre are read back (100%); codes that
    carry no digit are read at about chance."""
    g = torch.Generator().manual_seed(0)
    centres = torch.randn(10, 2, generator=g) * 5
    y = torch.arange(1000) % 10
    mu = centres[y] + 0.01 * torch.randn(1000, 2, generator=g)
    factors = nb.Morphometrics(*four_factors(1000).T)
    assert nb.code_measures(mu, factors, y)["digit_from_mu"] == 100.0
    blind = 0.01 * torch.randn(1000, 2, generator=g)
    assert nb.code_measures(blind, factors, y)["digit_from_mu"] < 20


class BarDecoder(Stub):
    """Draws a bar 16 pixels high whose slant grows with z0 (shear 0.15 per
    unit) and whose width grows with z1 (one pixel per unit)."""

    def decode(self, z, y):
        rows = torch.arange(28.0)[:, None]
        cols = torch.arange(28.0)[None, :]
        centre = 14 + 0.15 * z[:, 0, None, None] * (14 - rows)
        width = 5 + z[:, 1, None, None]
        inside = ((cols - centre).abs() < width / 2) & (rows >= 6) & (rows < 22)
        return torch.where(inside, 10.0, -10.0)[:, None]


def test_traversal_effects_find_the_factor_each_axis_changes(nb):
    """Along z0 the slant changes (by arctan 0.15 radians per unit near 0) and
    the width barely; along z1 the width (about a pixel per unit) and not the
    slant. With unit SDs the slopes are in the measures' own units."""
    along_z0, along_z1 = nb.traversal_effects(BarDecoder(), torch.ones(10, 4))
    assert along_z0.slant == pytest.approx(math.atan(0.15), rel=0.15)
    assert along_z1.slant < 0.01
    assert along_z1.width == pytest.approx(1.0, abs=0.25)
    assert along_z0.width < 0.25
    sd = torch.tensor([0.5, 2.0, 1.0, 1.0]).expand(10, 4)  # in SDs of the digit
    scaled = nb.traversal_effects(BarDecoder(), sd)
    assert scaled[0].slant == pytest.approx(2 * along_z0.slant, rel=1e-6)
    assert scaled[1].width == pytest.approx(along_z1.width / 2, rel=1e-6)


class PixelStub(Stub):
    """A 'decoder' that writes z0, z1 and the label into three pixels of its image."""

    def decode(self, z, y):
        out = torch.full((len(z), 1, 28, 28), -30.0)
        out[:, 0, 0, 0] = z[:, 0]
        out[:, 0, 0, 1] = z[:, 1]
        out[:, 0, 0, 2] = y.float()
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
        z_other = read(images, 1 - axis).view(10, 13)
        label = read(images, 2).view(10, 13)
        assert torch.allclose(z_axis, values.double().expand(10, 13), atol=1e-4)
        assert torch.allclose(z_other, torch.zeros(10, 13, dtype=torch.float64), atol=1e-4)
        assert torch.allclose(label, torch.arange(10.0).double()[:, None].expand(10, 13),
                              atol=1e-4)  # one row per digit


def test_ticks_label_the_whole_numbers_of_the_steps(nb):
    assert nb.STEPS.tolist() == [v / 2 for v in range(-6, 7)]  # -3 to 3 by 0.5
    assert nb.TICKS == ["-3", "", "-2", "", "-1", "", "0", "", "1", "", "2", "", "3"]


def test_manifold_z0_grows_rightward_and_z1_upward(nb):
    values = torch.linspace(-3, 3, 13)
    images = nb.manifold_images(PixelStub(), 7, values)
    z0 = read(images, 0).view(13, 13)
    z1 = read(images, 1).view(13, 13)
    assert torch.allclose(z0[0], values.double(), atol=1e-4)  # left to right
    assert torch.allclose(z1[:, 0], values.flip(0).double(), atol=1e-4)  # top row: z1 = 3
    assert torch.allclose(read(images, 2), torch.full((169,), 7.0).double(), atol=1e-4)


def test_show_grids_puts_the_ticks_at_the_tile_centres(nb, monkeypatch):
    shown = []

    def keep(fig, name):
        shown.append(fig)
    monkeypatch.setattr(nb, "save_fig", keep)
    nb.show_grids([(torch.zeros(6, 1, 28, 28), 3, "t")], "title", "name",
                  xticks=["a", "b", "c"], yticks=[0, 1])
    ax = shown[0].axes[0]
    assert list(ax.get_xticks()) == [15.5, 45.5, 75.5]  # 28 pixels and 2 of padding each
    assert list(ax.get_yticks()) == [15.5, 45.5]
    assert [t.get_text() for t in ax.get_xticklabels()] == ["a", "b", "c"]
    assert ax.images[0].get_array().shape[:2] == (2 * 30 + 2, 3 * 30 + 2)
