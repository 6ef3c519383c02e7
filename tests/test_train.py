"""The settings, the optimizer, clipping, the compute path, and short real trainings."""
from contextlib import nullcontext

import pytest
import torch
import torch.nn as nn

from conftest import CPU, column, small_fit
from nbdefs import notebook_parameters

BF16 = torch.autocast("cpu", dtype=torch.bfloat16)


@pytest.fixture(scope="module")
def BF16_PATH(nb):
    return nb.Precision(torch.bfloat16, BF16)


def test_the_parameters_cell_holds_the_assignments_settings(nb):
    p = notebook_parameters()
    assert p["BETAS"] == (1.0, 4.0)
    assert (p["EPOCHS"], p["WARMUP_EPOCHS"], p["BATCH_SIZE"], p["LR"]) == (20, 8, 128, 3e-4)
    assert nb.ADAMW == {"betas": (0.9, 0.95), "weight_decay": 1e-4}


def optimizer_group(path):
    return torch.load(path, weights_only=True)["opt"]["param_groups"][0]


def steps_of(path):
    """Optimizer steps taken, as the checkpoint's AdamW state counts them."""
    return int(torch.load(path, weights_only=True)["opt"]["state"][0]["step"])


def test_the_optimizer_trains_with_the_given_settings(nb, small_data, tmp_path):
    small_fit(nb, 1.0, small_data, tmp_path, lr=2e-4)
    (path,) = tmp_path.glob("*.pt")
    group = optimizer_group(path)
    assert (group["lr"], group["betas"], group["weight_decay"]) == (2e-4, (0.9, 0.95), 1e-4)
    assert group["fused"] and not group["amsgrad"]  # AdamW, one fused kernel


def test_every_setting_of_fit_shows_in_what_it_trains_and_in_its_checkpoint(
        nb, small_data, tmp_path, BF16_PATH):
    """A changed setting trains another model (seen in the result) and never reuses the
    checkpoint of the first."""
    (x, y), (x_val, y_val) = small_data
    _, base = small_fit(nb, 1.0, small_data, tmp_path)
    (first,) = tmp_path.glob("*.pt")
    assert column(base, "beta_eff") == [1 / 8] and steps_of(first) == 4  # 512 / 128
    fewer_train = ((x[:256], y[:256]), (x_val, y_val))
    fewer_val = ((x, y), (x_val[:128], y_val[:128]))
    cases = [  # (setting, fit's arguments, what the new run must show)
        ("beta", dict(beta=4.0), "beta_eff", [4 / 8]),
        ("epochs", dict(epochs=2), "epoch", [1, 2]),
        ("warmup_epochs", dict(warmup_epochs=2), "beta_eff", [1 / 2]),
        ("batch_size", dict(batch_size=64), "steps", 8),
        ("lr", dict(lr=1e-3), "lr", 1e-3),
        ("seed", dict(seed=1), "train_loss", "changed"),
        ("precision", dict(precision=BF16_PATH), "val_loss", "changed"),
        ("training data", dict(data=fewer_train), "steps", 2),
        ("validation data", dict(data=fewer_val), "val_loss", "changed"),
    ]
    for setting, change, key, expected in cases:
        settings = dict(change)
        beta = settings.pop("beta", 1.0)
        data = settings.pop("data", small_data)
        before = set(tmp_path.glob("*.pt"))
        _, history = small_fit(nb, beta, data, tmp_path, **settings)
        (new,) = set(tmp_path.glob("*.pt")) - before  # not the first one reused
        if key == "steps":
            shown = steps_of(new)
        elif key == "lr":
            shown = optimizer_group(new)["lr"]
        else:
            shown = column(history, key)
        if expected == "changed":
            assert shown != column(base, key), setting
        else:
            assert shown == expected, setting


def test_gradient_norm_is_clipped_at_one_before_every_step(nb, small_data, monkeypatch):
    (x, y), _ = small_data
    model = nb.CVAE()
    nn.init.normal_(model.dec_conv[-1].weight, std=1.0)  # large gradients to clip
    opt = torch.optim.AdamW(model.parameters())
    norms = []
    step = opt.step

    def recording_step(*args, **kwargs):
        grads = [p.grad.norm() for p in model.parameters() if p.grad is not None]
        norms.append(torch.stack(grads).norm().item())
        return step(*args, **kwargs)
    monkeypatch.setattr(opt, "step", recording_step)
    nb.train_epoch(model, opt, x[:256], y[:256], beta_eff=1.0, batch_size=64,
                   gen=torch.Generator(), ctx=nullcontext(), name="test")
    assert len(norms) == 4 and max(norms) <= 1.0 + 1e-4
    assert min(norms) > 0.99  # the clip was active, so the check is not vacuous


def test_train_epoch_returns_the_image_means_of_loss_recon_and_kl(nb, small_data,
                                                                  monkeypatch):
    """The epoch's means are the image-weighted means of the per-image terms that
    train_epoch's own calls of elbo_terms returned (lr = 0: the model stays put), over
    batches of unequal size (250 = 100 + 100 + 50)."""
    (x, y), _ = small_data
    torch.manual_seed(0)
    model = nb.CVAE()
    nn.init.constant_(model.mu_head.bias, 1.5)  # a sizeable KL
    nn.init.normal_(model.dec_conv[-1].weight, std=0.1)
    opt = torch.optim.AdamW(model.parameters(), lr=0.0, weight_decay=0.0)
    seen = []
    elbo_terms = nb.elbo_terms

    def observed(*args, **kwargs):
        terms = elbo_terms(*args, **kwargs)
        seen.append(torch.stack(terms).detach())
        return terms
    monkeypatch.setattr(nb, "elbo_terms", observed)
    means = nb.train_epoch(model, opt, x[:250], y[:250], beta_eff=0.7, batch_size=100,
                           gen=torch.Generator().manual_seed(1), ctx=nullcontext(),
                           name="test")
    assert [t.shape[1] for t in seen] == [100, 100, 50]
    recon, kl = torch.cat(seen, 1).double().mean(1).tolist()
    assert kl > 1.0
    assert means["recon"] == pytest.approx(recon, rel=1e-6)
    assert means["kl"] == pytest.approx(kl, rel=1e-6)
    assert means["loss"] == pytest.approx(recon + 0.7 * kl, rel=1e-6)


def test_bf16_path_and_fp32_give_the_same_loss(nb, small_data):
    (x, y), _ = small_data
    torch.manual_seed(0)
    model = nb.CVAE().to(memory_format=torch.channels_last)
    nn.init.normal_(model.dec_conv[-1].weight, std=0.05)
    eps = torch.randn(128, 2)
    fp32 = nb.elbo_terms(model, x[:128], y[:128], eps, nullcontext())
    bf16 = nb.elbo_terms(model, x[:128], y[:128], eps, BF16)
    for a, b in zip(fp32, bf16):
        assert b.dtype == torch.float32  # the loss itself stays in fp32
        assert torch.allclose(b.mean(), a.mean(), rtol=1e-2)
        assert not torch.equal(b, a)  # bf16 did run


def is_bf16(precision):
    return (precision.dtype == torch.bfloat16
            and isinstance(precision.ctx, torch.autocast)
            and precision.ctx.fast_dtype == torch.bfloat16)


@pytest.mark.filterwarnings("ignore:.*CUDA is not available")
@pytest.mark.parametrize("capability, native", [((8, 0), True), ((9, 0), True),
                                                 ((7, 5), False), ((6, 0), False)])
def test_bf16_only_where_the_gpu_has_it_natively(nb, monkeypatch, capability, native):
    """Compute capability 8.0 (Ampere) and newer compute bf16 natively; a T4 (7.5)
    only emulates it and must take the fp32 path."""
    monkeypatch.setattr(torch.cuda, "get_device_capability", lambda device=None: capability)
    precision = nb.precision_context(torch.device("cuda"))
    assert is_bf16(precision) is native
    assert native or (precision.dtype == torch.float32
                      and isinstance(precision.ctx, nullcontext))


@pytest.mark.parametrize("flags, native", [({"avx2", "avx512_bf16"}, True),
                                           ({"avx512f", "amx_bf16", "amx_tile"}, True),
                                           ({"avx2", "avx512f"}, False), (set(), False)])
def test_bf16_on_the_cpu_only_with_native_instructions(nb, monkeypatch, flags, native):
    monkeypatch.setattr(nb, "cpu_flags", lambda: flags)
    precision = nb.precision_context(CPU)
    assert is_bf16(precision) is native
    assert native or isinstance(precision.ctx, nullcontext)


def test_cpu_flags_are_the_ones_linux_lists():
    """On Linux, the flags line of /proc/cpuinfo, read by hand; elsewhere none."""
    from pathlib import Path
    from nbdefs import load_notebook_defs
    nb = load_notebook_defs()
    info = Path("/proc/cpuinfo")
    if not info.exists():
        assert nb.cpu_flags() == set()
        return
    line = next(l for l in info.read_text().splitlines() if l.startswith(("flags", "Features")))
    assert set(line.split(":", 1)[1].split()) <= nb.cpu_flags()


def test_no_private_torch_api_anywhere():
    """Public, documented calls only: no torch.<...>._name in the notebook or scripts."""
    import re
    from nbdefs import NOTEBOOK, ROOT
    import nbformat
    cells = nbformat.read(NOTEBOOK, as_version=4).cells
    sources = [c.source for c in cells if c.cell_type == "code"]
    sources += [p.read_text() for p in (ROOT / "scripts").glob("*.py")]
    for source in sources:
        found = re.search(r"\btorch(\.\w+)*\._(?!_)\w+", source)  # not dunders
        assert not found, found


def test_short_training_lowers_the_loss(nb, mnist, tmp_path):
    x, y = mnist["train"]
    x_val, y_val = mnist["test"]
    data = ((x[:2048], y[:2048]), (x_val[:500], y_val[:500]))
    _, history = small_fit(nb, 1.0, data, tmp_path, epochs=2, warmup_epochs=0, seed=1)
    assert column(history, "epoch") == [1, 2] and column(history, "beta_eff") == [1.0, 1.0]
    train = column(history, "train_loss")
    assert train[-1] < train[0] - 20
    assert history[-1]["val_loss"] < history[0]["val_loss"]


def test_the_seed_sets_the_initial_weights(nb, small_data, tmp_path):
    models = [small_fit(nb, 1.0, small_data, tmp_path / str(s), seed=s, lr=0.0)[0]
              for s in (0, 1)]
    assert not torch.equal(models[0].enc_fc[0].weight, models[1].enc_fc[0].weight)


def test_same_seed_same_result(nb, small_data, tmp_path):
    first, second = [small_fit(nb, 4.0, small_data, tmp_path / str(i), seed=7)
                     for i in range(2)]
    for key in ("train_loss", "val_loss"):
        assert column(first[1], key) == column(second[1], key)
    assert all(torch.equal(a, b) for a, b in zip(first[0].parameters(),
                                                  second[0].parameters()))


def test_validation_is_the_mean_of_the_per_image_terms(nb, small_data, tmp_path):
    _, (x_val, y_val) = small_data
    model, history = small_fit(nb, 1.0, small_data, tmp_path, epochs=2, warmup_epochs=4,
                               seed=3)
    recon, kl = nb.evaluate(model, x_val, y_val, 3)  # fit validates with its own seed
    last = history[-1]
    assert last["val_recon"] == recon.mean().item() and last["val_kl"] == kl.mean().item()
    assert last["val_recon"] != nb.evaluate(model, x_val, y_val, 0)[0].mean().item()
    # the loss weighs the KL with epoch 2's beta_eff = 1 * 2 / 4 (the next test
    # shows it with terms large enough to tell 0.5 from 1)
    assert last["val_loss"] == (recon + 0.5 * kl).mean().item()


def test_validation_weighs_the_kl_with_beta_eff_and_uses_the_seed(nb, small_data, tmp_path,
                                                                 monkeypatch):
    seeds = []

    def fixed_terms(model, x, y, seed, ctx=None):  # recon 100, KL 10 per image
        seeds.append(seed)
        return torch.full((len(x),), 100.0), torch.full((len(x),), 10.0)
    monkeypatch.setattr(nb, "evaluate", fixed_terms)
    _, history = small_fit(nb, 4.0, small_data, tmp_path, epochs=2, warmup_epochs=4, seed=3)
    assert column(history, "val_loss") == [100 + 1 * 10, 100 + 2 * 10]  # 4 * epoch / 4
    assert seeds == [3, 3]


def test_the_seed_sets_the_shuffling_and_noise_generator(nb, small_data, tmp_path,
                                                         monkeypatch):
    seeds = []
    train_epoch = nb.train_epoch

    def spy(model, opt, x, y, **settings):
        seeds.append(settings["gen"].initial_seed())
        return train_epoch(model, opt, x, y, **settings)
    monkeypatch.setattr(nb, "train_epoch", spy)
    small_fit(nb, 1.0, small_data, tmp_path, epochs=2, seed=5)
    assert seeds == [5, 5]


def test_evaluation_does_not_depend_on_the_chunk_size(nb, small_data, monkeypatch):
    """The noise is drawn up front, so chunks of any size see the same draws."""
    (x, y), _ = small_data
    torch.manual_seed(2)
    model = nb.CVAE()
    nn.init.normal_(model.dec_conv[-1].weight, std=0.1)
    chunked = nb.chunked
    runs = []
    sizes = []

    def chunked_by(size):
        def forced(model, fn, *tensors, batch=None):
            sizes.append(len(tensors[0].split(size)[0]))
            return chunked(model, fn, *tensors, batch=size)
        return forced
    for size in (512, 64, 37):
        monkeypatch.setattr(nb, "chunked", chunked_by(size))
        runs.append(nb.evaluate(model, x, y, seed=9))
    assert sizes == [512, 64, 37]  # the chunk size really changed
    for recon, kl in runs[1:]:
        assert torch.allclose(recon, runs[0][0], rtol=1e-5) and torch.equal(kl, runs[0][1])
    other = nb.evaluate(model, x, y, seed=10)[0]
    assert not torch.allclose(other, runs[0][0], rtol=1e-5)  # the noise matters


def test_train_epoch_visits_every_image_once_in_the_generators_order(nb, monkeypatch):
    """Each image carries its index in its first pixel; the batches must be
    the generator's permutation, split in order (not the data's order)."""
    n = 200
    x = torch.zeros(n, 1, 28, 28)
    x[:, 0, 0, 0] = torch.arange(n) / n
    y = torch.arange(n) % 10
    seen = []
    elbo_terms = nb.elbo_terms

    def spy(model, xb, yb, eps, ctx):
        seen.append((xb[:, 0, 0, 0] * n).round().long())
        return elbo_terms(model, xb, yb, eps, ctx)
    monkeypatch.setattr(nb, "elbo_terms", spy)
    model = nb.CVAE()
    opt = torch.optim.AdamW(model.parameters(), lr=0.0)
    nb.train_epoch(model, opt, x, y, beta_eff=1.0, batch_size=64,
                   gen=torch.Generator().manual_seed(4), ctx=nullcontext(), name="t")
    order = torch.cat(seen)
    assert [len(b) for b in seen] == [64, 64, 64, 8]
    assert torch.equal(order, torch.randperm(n, generator=torch.Generator().manual_seed(4)))
    assert not torch.equal(order, torch.arange(n))  # shuffled


def test_evaluate_draws_its_noise_from_the_standard_normal(nb, monkeypatch):
    """The eps that evaluate hands to elbo_terms are prior_draw(len(x), seed):
    mean 0 and standard deviation 1 (not 0.5, not another seed's)."""
    seen = []
    elbo_terms = nb.elbo_terms

    def spy(model, x, y, eps, ctx=nullcontext()):
        seen.append(eps)
        return elbo_terms(model, x, y, eps, ctx)
    monkeypatch.setattr(nb, "elbo_terms", spy)
    n = 4000
    nb.evaluate(nb.CVAE(), torch.zeros(n, 1, 28, 28), torch.arange(n) % 10, seed=5)
    eps = torch.cat(seen)
    assert torch.equal(eps, nb.prior_draw(n, 5))
    assert eps.mean().abs() < 0.05 and eps.std().item() == pytest.approx(1.0, abs=0.03)


def test_prior_draw_is_the_standard_normal_and_its_seed(nb):
    z = nb.prior_draw(20000, 3)
    assert z.shape == (20000, 2)
    assert torch.allclose(z.mean(0), torch.zeros(2), atol=0.03)
    assert torch.allclose(torch.cov(z.T), torch.eye(2), atol=0.03)  # N(0, I)
    assert torch.equal(z, nb.prior_draw(20000, 3))
    assert not torch.equal(z, nb.prior_draw(20000, 4))


def test_fit_records_what_train_epoch_returned(nb, small_data, tmp_path, monkeypatch):
    """Each record holds train_epoch's means under train_ and validation's under
    val_, by name (fixed terms: any swap shows)."""
    def fixed_epoch(model, opt, x, y, **settings):
        return {"loss": 1.0, "recon": 2.0, "kl": 3.0}

    def fixed_terms(model, x, y, seed, ctx=None):
        return torch.full((len(x),), 100.0), torch.full((len(x),), 10.0)
    monkeypatch.setattr(nb, "train_epoch", fixed_epoch)
    monkeypatch.setattr(nb, "evaluate", fixed_terms)
    _, history = small_fit(nb, 1.0, small_data, tmp_path, warmup_epochs=0)
    record = history[0]
    assert (record["train_loss"], record["train_recon"], record["train_kl"]) == (1, 2, 3)
    assert (record["val_loss"], record["val_recon"], record["val_kl"]) == (110, 100, 10)
    assert record["epoch"] == 1 and record["beta_eff"] == 1.0 and record["seconds"] > 0
