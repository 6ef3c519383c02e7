"""The settings, the optimizer, clipping, the compute path, and short real trainings."""
from contextlib import nullcontext

import pytest
import torch
import torch.nn as nn

from conftest import CPU, notebook_parameters, small_fit

BF16 = torch.autocast("cpu", dtype=torch.bfloat16)


def test_the_parameters_cell_holds_the_assignments_settings(nb):
    p = notebook_parameters()
    assert p["BETAS"] == (1.0, 4.0) and p["SEED"] == 8851
    assert (p["EPOCHS"], p["WARMUP_EPOCHS"], p["BATCH_SIZE"], p["LR"]) == (20, 8, 128, 3e-4)
    assert nb.ADAMW == {"betas": (0.9, 0.95), "weight_decay": 1e-4}


def test_the_optimizer_trains_with_the_given_settings(nb, small_data, tmp_path):
    small_fit(nb, 1.0, small_data, tmp_path, lr=2e-4)
    (path,) = tmp_path.glob("*.pt")
    group = torch.load(path, weights_only=True)["opt"]["param_groups"][0]
    assert (group["lr"], group["betas"], group["weight_decay"]) == (2e-4, (0.9, 0.95), 1e-4)
    assert group["fused"] and not group["amsgrad"]  # AdamW, one fused kernel


def steps_of(path):
    """Optimizer steps taken, as the checkpoint's AdamW state counts them."""
    return int(torch.load(path, weights_only=True)["opt"]["state"][0]["step"])


def test_every_setting_of_fit_shows_in_what_it_trains_and_in_its_checkpoint(
        nb, small_data, tmp_path):
    """A changed setting trains another model (seen in the result) and never reuses the
    checkpoint of the first."""
    (x, y), val = small_data
    base, h = small_fit(nb, 1.0, small_data, tmp_path)
    (first,) = tmp_path.glob("*.pt")
    assert h["beta_eff"] == [1 / 8] and steps_of(first) == 4  # 512 images, batches of 128
    changes = {
        "beta": (dict(beta=4.0), lambda m, h, p: h["beta_eff"] == [4 / 8]),
        "epochs": (dict(epochs=2), lambda m, h, p: h["epoch"] == [1, 2]),
        "warmup_epochs": (dict(warmup_epochs=2), lambda m, h, p: h["beta_eff"] == [0.5]),
        "batch_size": (dict(batch_size=64), lambda m, h, p: steps_of(p) == 8),
        "lr": (dict(lr=1e-3), lambda m, h, p: torch.load(p, weights_only=True)["opt"][
            "param_groups"][0]["lr"] == 1e-3),
        "seed": (dict(seed=1), lambda m, h, p: h["train_loss"] != base_h["train_loss"]),
        "ctx": (dict(ctx=BF16), lambda m, h, p: h["train_loss"] != base_h["train_loss"]
                and h["val_loss"] != base_h["val_loss"]),  # validation under ctx too
        "training data": (dict(data=((x[:256], y[:256]), val)),
                          lambda m, h, p: steps_of(p) == 2),
        "validation data": (dict(data=((x, y), (val[0][:128], val[1][:128]))),
                            lambda m, h, p: h["val_loss"] != base_h["val_loss"]),
    }
    base_h = h
    for name, (change, shows) in changes.items():
        settings = dict(change)
        beta = settings.pop("beta", 1.0)
        data = settings.pop("data", small_data)
        before = set(tmp_path.glob("*.pt"))
        model, history = small_fit(nb, beta, data, tmp_path, **settings)
        (new,) = set(tmp_path.glob("*.pt")) - before  # not the first one reused
        assert shows(model, history, new), name


def test_gradient_norm_is_clipped_at_one_before_every_step(nb, small_data, monkeypatch):
    (x, y), _ = small_data
    model = nb.CVAE()
    nn.init.normal_(model.dec_conv[-1].weight, std=1.0)  # large gradients to clip
    opt = torch.optim.AdamW(model.parameters())
    norms, step = [], opt.step

    def recording_step(*args, **kwargs):
        grads = [p.grad.norm() for p in model.parameters() if p.grad is not None]
        norms.append(torch.stack(grads).norm().item())
        return step(*args, **kwargs)
    monkeypatch.setattr(opt, "step", recording_step)
    nb.train_epoch(model, opt, x[:256], y[:256], beta_eff=1.0, batch_size=64,
                   gen=torch.Generator(), ctx=nullcontext(), name="test")
    assert len(norms) == 4 and max(norms) <= 1.0 + 1e-4
    assert min(norms) > 0.99  # the clip was active, so the check is not vacuous


def test_train_epoch_returns_the_image_means_of_loss_recon_and_kl(nb, small_data):
    """With lr = 0 the model stays put: the epoch's means are those of the per-image terms
    at the noise train_epoch draws (batches of unequal size: 250 = 100 + 100 + 50)."""
    (x, y), _ = small_data
    x, y = x[:250], y[:250]
    torch.manual_seed(0)
    model = nb.CVAE()
    nn.init.constant_(model.mu_head.bias, 1.5)  # a sizeable KL
    nn.init.normal_(model.dec_conv[-1].weight, std=0.1)
    opt = torch.optim.AdamW(model.parameters(), lr=0.0, weight_decay=0.0)
    loss, recon, kl = nb.train_epoch(model, opt, x, y, beta_eff=0.7, batch_size=100,
                                     gen=torch.Generator().manual_seed(1),
                                     ctx=nullcontext(), name="test")
    gen = torch.Generator().manual_seed(1)  # the same draws, by hand
    terms = []
    for idx in torch.randperm(250, generator=gen).split(100):
        eps = torch.randn(len(idx), 2, generator=gen)
        terms.append(torch.stack(nb.elbo_terms(model.train(), x[idx], y[idx], eps)))
    recon_ref, kl_ref = torch.cat(terms, 1).double().mean(1).tolist()
    assert kl_ref > 1.0
    assert recon == pytest.approx(recon_ref, rel=1e-5) and kl == pytest.approx(kl_ref, rel=1e-5)
    assert loss == pytest.approx(recon_ref + 0.7 * kl_ref, rel=1e-5)


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


@pytest.mark.parametrize("capability, native", [((8, 0), True), ((9, 0), True),
                                                 ((7, 5), False), ((6, 0), False)])
def test_bf16_only_where_the_gpu_has_it_natively(nb, monkeypatch, capability, native):
    """A T4 (7.5) emulates bf16: is_bf16_supported() is True there, but only with
    emulation; the notebook must take the fp32 path."""
    def fake_is_bf16_supported(including_emulation=True):
        return capability >= (8, 0) or including_emulation
    monkeypatch.setattr(torch.cuda, "is_bf16_supported", fake_is_bf16_supported)
    assert nb.bf16_native(torch.device("cuda")) is native


@pytest.mark.parametrize("avx512_bf16, amx, native", [(True, False, True), (False, True, True),
                                                      (False, False, False)])
def test_bf16_on_the_cpu_only_with_native_instructions(nb, monkeypatch, avx512_bf16, amx,
                                                       native):
    monkeypatch.setattr(torch.cpu, "_is_avx512_bf16_supported", lambda: avx512_bf16)
    monkeypatch.setattr(torch.cpu, "_is_amx_tile_supported", lambda: amx)
    assert nb.bf16_native(CPU) is native


def test_short_training_lowers_the_loss(nb, mnist, tmp_path):
    (x, y), (xt, yt) = mnist
    _, h = small_fit(nb, 1.0, ((x[:2048], y[:2048]), (xt[:500], yt[:500])), tmp_path,
                     epochs=2, warmup_epochs=0, seed=1)
    assert h["epoch"] == [1, 2] and h["beta_eff"] == [1.0, 1.0]
    assert h["train_loss"][-1] < h["train_loss"][0] - 20
    assert h["val_loss"][-1] < h["val_loss"][0]


def test_the_seed_sets_the_initial_weights(nb, small_data, tmp_path):
    models = [small_fit(nb, 1.0, small_data, tmp_path / str(s), seed=s, lr=0.0)[0]
              for s in (0, 1)]
    assert not torch.equal(models[0].enc_fc[0].weight, models[1].enc_fc[0].weight)


def test_same_seed_same_result(nb, small_data, tmp_path):
    (m1, h1), (m2, h2) = [small_fit(nb, 4.0, small_data, tmp_path / str(i), seed=7)
                          for i in range(2)]
    assert h1["train_loss"] == h2["train_loss"] and h1["val_loss"] == h2["val_loss"]
    assert all(torch.equal(a, b) for a, b in zip(m1.parameters(), m2.parameters()))


def test_validation_is_the_mean_of_the_per_image_terms(nb, small_data, tmp_path):
    (x, y), (xt, yt) = small_data
    model, h = small_fit(nb, 1.0, small_data, tmp_path, epochs=2, warmup_epochs=4, seed=3)
    recon, kl = nb.evaluate(model, xt, yt, 3)  # fit validates with its own seed
    assert h["val_recon"][-1] == recon.mean().item() and h["val_kl"][-1] == kl.mean().item()
    assert h["val_recon"][-1] != nb.evaluate(model, xt, yt, 0)[0].mean().item()
    # the loss weighs the KL with epoch 2's beta_eff = 1 * 2 / 4, not with beta
    assert h["val_loss"][-1] == (recon + 0.5 * kl).mean().item()
    assert h["val_loss"][-1] != (recon + kl).mean().item()


def test_validation_weighs_the_kl_with_beta_eff_and_uses_the_seed(nb, small_data, tmp_path,
                                                                 monkeypatch):
    seeds = []

    def fixed_terms(model, x, y, seed, ctx=None):  # recon 100, KL 10 per image
        seeds.append(seed)
        return torch.full((len(x),), 100.0), torch.full((len(x),), 10.0)
    monkeypatch.setattr(nb, "evaluate", fixed_terms)
    _, h = small_fit(nb, 4.0, small_data, tmp_path, epochs=2, warmup_epochs=4, seed=3)
    assert h["val_loss"] == [100 + 1 * 10, 100 + 2 * 10]  # beta_eff = 4 * epoch / 4
    assert seeds == [3, 3]


def test_the_seed_sets_the_shuffling_and_noise_generator(nb, small_data, tmp_path,
                                                         monkeypatch):
    seeds, train_epoch = [], nb.train_epoch

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
    chunked, runs, sizes = nb.chunked, [], []

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
