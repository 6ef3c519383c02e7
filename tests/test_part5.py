"""Part 5's measures of the digits and of the code, and the figure helpers, on inputs whose
answer is known."""
import math

import pytest
import torch
import torch.nn as nn
import torch.nn.functional as F

SLANT, THICKNESS, WIDTH, HEIGHT, AREA = range(5)


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


def test_morphometrics_names_its_five_factors(nb):
    assert nb.FACTORS == ("slant", "thickness", "width", "height", "area")
    assert nb.morphometrics(torch.stack([bar(), bar(4)])).shape == (2, 5)


@pytest.mark.parametrize("width", [2, 3, 4, 6])
def test_upright_bars_thickness_width_height_and_area(nb, width):
    """Tolerances: thickness within 15 % (the bar's ends lower the mean depth), width
    within half a pixel (bicubic upsampling widens an edge by a quarter pixel), height 98 %
    of the bar's (2 % of the ink is left outside) within 0.6 pixel, area within 6 %,
    slant zero."""
    m = nb.morphometrics(bar(width)[None])[0]
    assert m[SLANT] == pytest.approx(0.0, abs=1e-9)
    assert m[THICKNESS] == pytest.approx(width, rel=0.15)
    assert m[WIDTH] == pytest.approx(width, abs=0.5)
    assert m[HEIGHT] == pytest.approx(0.98 * 16, abs=0.6)
    assert m[AREA] == pytest.approx(16 * width, rel=0.06)


@pytest.mark.parametrize("shear", [-0.4, -0.2, 0.2, 0.4])
def test_sheared_bars_slant_is_the_shears_arctan_and_the_rest_barely_moves(nb, shear):
    """A bar sheared by s leans by arctan(s) (within 0.03 rad); de-slanting restores the
    upright width (within a pixel: the rows' rounding makes steps) and the height."""
    upright, sheared = nb.morphometrics(torch.stack([bar(3), bar(3, shear=shear)]))
    assert sheared[SLANT] == pytest.approx(math.atan(shear), abs=0.03)
    assert sheared[WIDTH] == pytest.approx(upright[WIDTH].item(), abs=1.0)
    assert sheared[HEIGHT] == pytest.approx(upright[HEIGHT].item(), abs=0.5)
    perpendicular = 3 * math.cos(math.atan(shear))  # the stroke's true thickness
    assert sheared[THICKNESS] == pytest.approx(perpendicular, rel=0.2)


@pytest.mark.parametrize("radius, thickness", [(8, 2), (8, 4), (10, 3)])
def test_rings_thickness_and_size(nb, radius, thickness):
    """A ring: thickness within 10 %, width = height = outer diameter within a pixel."""
    m = nb.morphometrics(ring(radius, thickness)[None])[0]
    assert m[THICKNESS] == pytest.approx(thickness, rel=0.1)
    assert m[WIDTH] == pytest.approx(2 * radius + thickness, abs=1.0)
    assert m[HEIGHT] == pytest.approx(m[WIDTH].item(), abs=0.3)
    assert m[SLANT] == pytest.approx(0.0, abs=0.01)


def test_first_training_digit_against_morpho_mnists_published_values(nb, mnist):
    """Morpho-MNIST's released measures of training image 0 (its tests/test_measure.py):
    area 107.3, thickness 2.46, slant 0.231, width 14.54, height 19.85. Ours (no scikit-
    image: bicubic instead of its pyramid upsampling, depth by erosions instead of the
    medial axis) lie within 5 %."""
    m = nb.morphometrics(mnist[0][0][:1])[0]
    expected = [0.231, 2.46, 14.54, 19.85, 107.3]
    assert m.tolist() == pytest.approx(expected, rel=0.05)


def test_mnist_digits_dilated_get_thicker_and_sheared_get_slanted(nb, mnist):
    """On 200 test digits: a 3 x 3 dilation thickens the strokes by about two pixels (one
    on each side) and barely moves the slant; a shear moves the slant and barely the
    thickness."""
    x = mnist[1][0][:200]
    before = nb.morphometrics(x)
    thick = nb.morphometrics(F.max_pool2d(x, 3, 1, 1))
    shift = thick - before
    assert (shift[:, THICKNESS] > 0.5).float().mean() > 0.95
    assert shift[:, THICKNESS].median() == pytest.approx(2.0, abs=0.5)
    assert shift[:, SLANT].abs().median() < 0.05
    assert (shift[:, AREA] > 0).all()
    theta = torch.tensor([[1.0, 0.3, 0.0], [0.0, 1.0, 0.0]]).expand(200, 2, 3)  # top right
    grid = F.affine_grid(theta, list(x.shape), align_corners=False)
    sheared = nb.morphometrics(F.grid_sample(x, grid, align_corners=False))
    moved = sheared - before
    assert moved[:, SLANT].median() == pytest.approx(math.atan(0.3), abs=0.08)  # leans right
    assert moved[:, THICKNESS].abs().median() < 0.3


def test_digit_spread_is_the_mean_and_sd_of_each_digit(nb):
    labels = torch.arange(30) % 10  # three of each digit
    v = (labels + 1) * 10.0 + torch.tensor([-1.0, 0.0, 1.0]).repeat_interleave(10)
    factors = torch.stack([v, 2 * v], 1).double()
    mean, sd = nb.digit_spread(factors, labels)
    assert torch.allclose(mean[:, 0], (torch.arange(10) + 1).double() * 10, atol=1e-9)
    assert torch.allclose(sd, torch.tensor([1.0, 2.0]).double().expand(10, 2))


def test_code_stats_on_synthetic_latents(nb):
    g = torch.Generator().manual_seed(0)
    a, b = torch.randn(20000, generator=g), torch.randn(20000, generator=g)
    mu = torch.stack([a, 0.05 * b], 1)  # variances 1 and 0.0025
    logvar = torch.full((20000, 2), math.log(0.25))
    factors = torch.stack([a, b, a, b, a], 1).double()  # one column per name in FACTORS
    st = nb.code_stats(mu, logvar, factors)
    assert st["active units"] == 1
    assert st["mean sigma"] == pytest.approx([0.5, 0.5])
    by_hand = 0.5 * (1.0 + 0.25 - 1 - math.log(0.25))  # E[mu^2] = 1 on axis 0
    assert st["KL"][0] == pytest.approx(by_hand, rel=0.03)
    assert st["slant"][0] > 0.99 and st["slant"][1] < 0.05 and st["thickness"][1] > 0.99
    assert st["alignment score"] > 0.9
    mixed = nb.code_stats(torch.stack([a + b, a - b], 1), logvar, factors)
    assert mixed["alignment score"] < 0.1 and mixed["active units"] == 2


def test_alignment_by_hand(nb):
    effect = torch.tensor([[3.0, 1.0], [0.0, 2.0]])  # (|3-1|/4 + |0-2|/2) / 2
    assert nb.alignment(effect) == pytest.approx(0.75)


def test_knn_accuracy_on_synthetic_clusters(nb):
    g = torch.Generator().manual_seed(1)
    labels = torch.randint(10, (4000,), generator=g)  # the two halves differ
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


class ShapeStub(nn.Module):
    """A decoder of bars whose slant grows with z0 and whose width grows with z1."""

    def __init__(self):
        super().__init__()
        self.dummy = nn.Parameter(torch.zeros(1))

    def decode(self, z, y):
        bars = [bar(width=int(round(4 + 1.5 * b)), shear=0.15 * a) for a, b in z.tolist()]
        return torch.stack(bars) * 60 - 30  # logits: ink 30, paper -30


def test_traversal_effects_attribute_slant_to_z0_and_width_to_z1(nb):
    spread = torch.ones(10, 5, dtype=torch.float64)
    effects = nb.traversal_effects(ShapeStub(), spread).abs()  # (axis, digit, factor)
    assert effects.shape == (2, 10, 5)
    slant, width = effects[..., SLANT], effects[..., WIDTH]
    assert slant[0].min() > 0.5 and slant[1].max() < 0.05  # radians over z0 in [-2, 2]
    assert width[1].min() > 4 and width[0].max() < 1.5  # pixels over z1 in [-2, 2]
    halved = nb.traversal_effects(ShapeStub(), 2 * spread).abs()
    assert torch.allclose(halved, effects / 2)  # in units of the spread


class LabelJudge(nn.Module):
    """Reads the label that PixelStub wrote into pixel 2."""

    def __init__(self):
        super().__init__()
        self.dummy = nn.Parameter(torch.zeros(1))

    def forward(self, x):
        label = torch.logit(x[:, 0, 0, 2].double()).round().long()
        return F.one_hot(label, 10).float()


class SignJudge(LabelJudge):
    """Reads 1 where z0 > 0, else 0: its accuracy depends on the draws of z."""

    def forward(self, x):
        return F.one_hot((x[:, 0, 0, 0] > 0.5).long(), 10).float()


def test_judge_samples_draw_z_from_the_seed(nb):
    runs = [nb.judge_samples(SignJudge(), PixelStub(), seed=s, n=50) for s in (3, 3, 4)]
    assert runs[0] == runs[1] and runs[0] != runs[2]
    assert runs[0][0] == pytest.approx(50, abs=25) and runs[0][5] == 0.0


class ScaleJudge(LabelJudge):
    """Reads 1 where |z0| > 1 (z0 is the logit PixelStub wrote into pixel 0), else 0."""

    def forward(self, x):
        z0 = torch.logit(x[:, 0, 0, 0].double())
        return F.one_hot((z0.abs() > 1).long(), 10).float()


def test_judge_samples_draw_z_from_the_standard_normal(nb):
    accuracy = nb.judge_samples(ScaleJudge(), PixelStub(), seed=0, n=4000)
    assert accuracy[1] == pytest.approx(100 * 0.3173, abs=2.5)  # P(|z| > 1), N(0, 1)


def test_judge_samples_are_decoded_with_every_label(nb):
    accuracy = nb.judge_samples(LabelJudge(), PixelStub(), seed=0, n=20)
    assert accuracy == {**{d: 100.0 for d in range(10)}, "all": 100.0}


def test_show_grids_puts_the_ticks_at_the_tile_centres(nb, monkeypatch):
    shown = []
    monkeypatch.setattr(nb, "save_fig", lambda fig, name: shown.append(fig))
    nb.show_grids([(torch.zeros(6, 1, 28, 28), 3, "t")], "title", "name",
                  xticks=["a", "b", "c"], yticks=[0, 1])
    ax = shown[0].axes[0]
    assert list(ax.get_xticks()) == [15.5, 45.5, 75.5]  # 28 pixels and 2 of padding each
    assert list(ax.get_yticks()) == [15.5, 45.5]
    assert [t.get_text() for t in ax.get_xticklabels()] == ["a", "b", "c"]
    assert ax.images[0].get_array().shape[:2] == (2 * 30 + 2, 3 * 30 + 2)
