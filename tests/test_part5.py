"""Part 5's measures of the digits and of the code, and the figure helpers, on inputs whose
answer is known."""
import math

import pytest
import torch
import torch.nn.functional as F

from helpers import Stub, random_weights

SLANT, WIDTH, HEIGHT, AREA = 0, 1, 2, 3  # the columns of morphometrics()


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


def test_one_column_per_factor(nb):
    assert nb.morphometrics(torch.stack([bar(), bar(4)])).shape == (2, len(nb.FACTORS))


@pytest.mark.parametrize("width", [2, 3, 4, 6])
def test_upright_bars_width_height_and_area(nb, width):
    """Tolerances: width within half a pixel (bicubic upsampling widens an edge by a
    quarter pixel), height 98 % of the bar's (2 % of the ink is left outside) within 0.6
    pixel, area within 6 %, slant zero."""
    m = nb.morphometrics(bar(width)[None])[0]
    assert m[SLANT] == pytest.approx(0.0, abs=1e-9)
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


@pytest.mark.parametrize("radius, thickness", [(8, 2), (8, 4), (10, 3)])
def test_rings_size(nb, radius, thickness):
    """A ring: width = height = outer diameter within a pixel, no slant."""
    m = nb.morphometrics(ring(radius, thickness)[None])[0]
    assert m[WIDTH] == pytest.approx(2 * radius + thickness, abs=1.0)
    assert m[HEIGHT] == pytest.approx(m[WIDTH].item(), abs=0.3)
    assert m[SLANT] == pytest.approx(0.0, abs=0.01)


def test_first_training_digit_against_morpho_mnists_published_values(nb, mnist):
    """Morpho-MNIST's released measures of training image 0 (its tests/test_measure.py):
    slant 0.231, width 14.54, height 19.85, area 107.3. Ours (no scikit-image: bicubic
    instead of its pyramid upsampling) lie within 5 %."""
    m = nb.morphometrics(mnist["train"][0][:1])[0]
    assert m.tolist() == pytest.approx([0.231, 14.54, 19.85, 107.3], rel=0.05)


def test_mnist_digits_sheared_get_slanted_and_dilated_get_wider(nb, mnist):
    """On 200 test digits: a shear moves the slant by its arctan and barely the height; a
    3 x 3 dilation widens each digit by about two pixels and keeps its slant."""
    x = mnist["test"][0][:200]
    before = nb.morphometrics(x)
    theta = torch.tensor([[1.0, 0.3, 0.0], [0.0, 1.0, 0.0]]).expand(200, 2, 3)  # top right
    grid = F.affine_grid(theta, list(x.shape), align_corners=False)
    moved = nb.morphometrics(F.grid_sample(x, grid, align_corners=False)) - before
    assert moved[:, SLANT].median() == pytest.approx(math.atan(0.3), abs=0.08)  # leans right
    assert moved[:, HEIGHT].abs().median() < 0.5
    dilated = nb.morphometrics(F.max_pool2d(x, 3, 1, 1)) - before
    assert dilated[:, WIDTH].median() == pytest.approx(2.0, abs=0.5)
    assert dilated[:, SLANT].abs().median() < 0.05 and (dilated[:, AREA] > 0).all()


def test_factor_reference_standardises_each_factor_within_each_digit(nb, mnist):
    x, y = mnist["test"][0][:300], mnist["test"][1][:300]
    raw = nb.morphometrics(x)
    factors = nb.factor_reference(x, y)
    for digit in (0, 7):
        group = raw[y == digit]
        expected = (group - group.mean(0)) / group.std(0)
        assert torch.allclose(factors[y == digit], expected)
    assert not torch.allclose(factors, (raw - raw.mean(0)) / raw.std(0))  # not pooled


def test_abs_correlation_is_pearsons(nb):
    g = torch.Generator().manual_seed(0)
    factors = torch.randn(500, 3, generator=g, dtype=torch.float64)
    codes = factors[:, :2] @ torch.tensor([[1.0, -0.5], [0.3, 2.0]]).double()
    codes += torch.randn(500, 2, generator=g, dtype=torch.float64)
    expected = torch.corrcoef(torch.cat([factors.T, codes.T]))[:3, 3:].abs()
    assert torch.allclose(nb.abs_correlation(factors, codes), expected)
    stacked = torch.stack([codes, -codes, 3 * codes])  # leading dimensions broadcast
    assert torch.allclose(nb.abs_correlation(factors, stacked), expected.expand(3, 3, 2))


def test_alignment_by_hand(nb):
    effect = torch.tensor([[3.0, 1.0], [0.0, 2.0]])  # (|3-1|/4 + |0-2|/2) / 2
    assert nb.alignment(effect).item() == pytest.approx(0.75)


def latents_on_turned_axes(degrees, n=4000):
    """Two independent factors, each carried by one of the axes turned by `degrees`."""
    g = torch.Generator().manual_seed(1)
    factors = torch.randn(n, 2, generator=g, dtype=torch.float64)
    theta = math.radians(degrees)
    axes = torch.tensor([[math.cos(theta), math.sin(theta)],
                         [-math.sin(theta), math.cos(theta)]], dtype=torch.float64)
    return factors, factors @ axes  # mu = a (cos, sin) + b (-sin, cos)


@pytest.mark.parametrize("degrees", [0, 17, 45, 72])
def test_turned_alignment_finds_the_angle_of_the_factors_axes(nb, degrees):
    factors, mu = latents_on_turned_axes(degrees)
    angles, scores = nb.turned_alignment(factors, mu.float())
    assert angles.tolist() == list(range(90))
    assert angles[scores.argmax()].item() == degrees
    assert scores.max() > 0.95
    assert scores[0].item() == pytest.approx(nb.alignment(nb.abs_correlation(factors, mu)))
    if degrees == 45:  # on the unturned axes each factor loads on both equally
        assert scores[0] < 0.05


class LinearDecoder(Stub):
    """Logits = z @ W in the first pixels, -30 (paper) elsewhere: its mean image's
    Jacobian at z = 0 is W^T / 4 (the sigmoid's slope at 0) in those pixels."""

    def __init__(self, weight):
        super().__init__()
        self.weight = weight  # (2, pixels)

    def decode(self, z, y):  # out of place: jacobian_shape vmaps over it
        paper = torch.full((len(z), 28 * 28 - self.weight.shape[1]), -30.0)
        return torch.cat([z @ self.weight, paper], 1).view(-1, 1, 28, 28)


@pytest.mark.parametrize("weight, cos, ratio", [
    ([[2.0, 0.0], [0.0, 1.0]], 0.0, 2.0),  # orthogonal columns, scales 2 : 1
    ([[1.0, 1.0], [1.0, -1.0]], 0.0, 1.0),  # orthogonal, equal scales
    ([[1.0, 0.0], [0.5, 0.5]], 1 / math.sqrt(2), (3 + math.sqrt(5)) / 2),  # by hand
])
def test_jacobian_shape_of_linear_decoders(nb, weight, cos, ratio):
    model = LinearDecoder(torch.tensor(weight))  # columns of J: the rows of weight
    shape = nb.jacobian_shape(model, torch.zeros(5, 2), torch.arange(5))
    assert shape == pytest.approx((cos, ratio), abs=1e-5)


def test_jacobian_shape_against_finite_differences(nb):
    torch.manual_seed(3)
    model = random_weights(nb.CVAE(), std=0.1).double()
    mu = torch.randn(4, 2, dtype=torch.float64)
    y = torch.arange(4)
    step = 1e-6
    columns = []
    for axis in range(2):
        dz = torch.zeros(2, dtype=torch.float64)
        dz[axis] = step
        with torch.no_grad():
            up = torch.sigmoid(model.decode(mu + dz, y)).flatten(1)
            down = torch.sigmoid(model.decode(mu - dz, y)).flatten(1)
        columns.append((up - down) / (2 * step))
    jac = torch.stack(columns, -1)
    cos = F.cosine_similarity(jac[..., 0], jac[..., 1], dim=1).abs().mean().item()
    singular = torch.linalg.svdvals(jac)
    ratio = (singular[:, 0] / singular[:, 1]).median().item()
    assert nb.jacobian_shape(model, mu, y) == pytest.approx((cos, ratio), rel=1e-5)


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


def test_traversal_panels_are_one_per_axis_over_the_steps(nb):
    panels = nb.traversal_panels(PixelStub())
    assert [len(images) for images, _, _ in panels] == [10 * len(nb.STEPS)] * 2
    assert nb.STEPS[0] == -3 and nb.STEPS[-1] == 3 and len(nb.STEPS) == 13  # Part 4's
    for axis, (images, per_row, title) in enumerate(panels):
        assert per_row == len(nb.STEPS) and f"$z_{axis}$" in title
        assert torch.allclose(read(images, axis)[:13], nb.STEPS.double(), atol=1e-4)


def test_manifold_z0_grows_rightward_and_z1_upward(nb):
    values = torch.linspace(-3, 3, 13)
    images = nb.manifold_images(PixelStub(), 7, values)
    z0 = read(images, 0).view(13, 13)
    z1 = read(images, 1).view(13, 13)
    assert torch.allclose(z0[0], values.double(), atol=1e-4)  # left to right
    assert torch.allclose(z1[:, 0], values.flip(0).double(), atol=1e-4)  # top row: z1 = 3
    assert torch.allclose(read(images, 2), torch.full((169,), 7.0).double(), atol=1e-4)


class LabelJudge(Stub):
    """Reads the label that PixelStub wrote into pixel 2."""

    def forward(self, x):
        return F.one_hot(read(x, 2).round().long(), 10).float()


class SignJudge(Stub):
    """Reads 1 where z0 > 0, else 0: its accuracy depends on the draws of z."""

    def forward(self, x):
        return F.one_hot((read(x, 0) > 0).long(), 10).float()


class FarJudge(Stub):
    """Reads the label where |z0| > 1, the next digit elsewhere: its accuracy is the
    share of draws with |z0| > 1."""

    def forward(self, x):
        label = read(x, 2).round().long()
        far = read(x, 0).abs() > 1
        return F.one_hot(torch.where(far, label, (label + 1) % 10), 10).float()


def test_judge_samples_reads_every_label(nb):
    assert nb.judge_samples(LabelJudge(), PixelStub(), seed=0, n=20) == 100.0


def test_judge_samples_draw_z_from_the_seed(nb):
    runs = [nb.judge_samples(SignJudge(), PixelStub(), seed=s, n=50) for s in (3, 3, 4)]
    assert runs[0] == runs[1] and runs[0] != runs[2]
    assert runs[0] == pytest.approx(10, abs=3)  # labels 0 and 1: about half each


def test_judge_samples_draw_z_from_the_standard_normal(nb):
    accuracy = nb.judge_samples(FarJudge(), PixelStub(), seed=0, n=4000)
    assert accuracy == pytest.approx(100 * 0.3173, abs=1.0)  # P(|z| > 1), N(0, 1)


def test_show_grids_puts_the_ticks_at_the_tile_centres(nb, monkeypatch):
    shown = []

    def keep(fig, name, dpi=200):
        shown.append(fig)
    monkeypatch.setattr(nb, "save_fig", keep)
    nb.show_grids([(torch.zeros(6, 1, 28, 28), 3, "t")], "title", "name",
                  xticks=["a", "b", "c"], yticks=[0, 1])
    ax = shown[0].axes[0]
    assert list(ax.get_xticks()) == [15.5, 45.5, 75.5]  # 28 pixels and 2 of padding each
    assert list(ax.get_yticks()) == [15.5, 45.5]
    assert [t.get_text() for t in ax.get_xticklabels()] == ["a", "b", "c"]
    assert ax.images[0].get_array().shape[:2] == (2 * 30 + 2, 3 * 30 + 2)
