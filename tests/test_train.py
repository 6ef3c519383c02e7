"""The settings, the optimizer, clipping, the compute path, and short real trainings."""
from contextlib import nullcontext

import pytest
import torch
import torch.nn as nn

from conftest import CPU, column, small_fit
from nbdefs import notebook_parameters

BF16 = torch.autocast("cpu", dtype=torch.bfloat16)


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
        nb, small_data, tmp_path):
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
        ("ctx", dict(ctx=BF16), "val_loss", "changed"),  # validation under ctx too
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
    assert means["train_recon"] == pytest.approx(recon, rel=1e-6)
    assert means["train_kl"] == pytest.approx(kl, rel=1e-6)
    assert means["train_loss"] == pytest.approx(recon + 0.7 * kl, rel=1e-6)


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


def is_bf16(ctx):
    return isinstance(ctx, torch.autocast) and ctx.fast_dtype == torch.bfloat16


@pytest.mark.filterwarnings("ignore:CUDA is not available")
@pytest.mark.parametrize("capability, native", [((8, 0), True), ((9, 0), True),
                                                 ((7, 5), False), ((6, 0), False)])
def test_bf16_only_where_the_gpu_has_it_natively(nb, monkeypatch, capability, native):
    """A T4 (7.5) emulates bf16: is_bf16_supported() is True there, but only with
    emulation; the notebook must take the fp32 path."""
    def fake_is_bf16_supported(including_emulation=True):
        return capability >= (8, 0) or including_emulation
    monkeypatch.setattr(torch.cuda, "is_bf16_supported", fake_is_bf16_supported)
    assert is_bf16(nb.precision_context(torch.device("cuda"))) is native


@pytest.mark.parametrize("avx512_bf16, amx, native", [(True, False, True), (False, True, True),
                                                      (False, False, False)])
def test_bf16_on_the_cpu_only_with_native_instructions(nb, monkeypatch, avx512_bf16, amx,
                                                       native):
    monkeypatch.setattr(torch.cpu, "_is_avx512_bf16_supported", lambda: avx512_bf16)
    monkeypatch.setattr(torch.cpu, "_is_amx_tile_supported", lambda: amx)
    ctx = nb.precision_context(CPU)
    assert is_bf16(ctx) is native
    assert native or isinstance(ctx, nullcontext)


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
    # the loss weighs the KL with epoch 2's beta_eff = 1 * 2 / 4, not with beta
    assert last["val_loss"] == (recon + 0.5 * kl).mean().item()
    assert last["val_loss"] != (recon + kl).mean().item()


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
