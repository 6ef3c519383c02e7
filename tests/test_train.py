"""The optimizer, clipping, the compute path, and short real trainings."""
import pytest
import torch
import torch.nn as nn

CPU = torch.device("cpu")


def quiet(_):
    pass


def test_optimizer_as_suggested(nb, small_data, tmp_path):
    nb.fit(1.0, small_data, CPU, epochs=1, ckpt_dir=tmp_path, log=quiet)
    (path,) = tmp_path.glob("*.pt")
    group = torch.load(path, weights_only=True)["opt"]["param_groups"][0]
    assert (group["lr"], group["betas"], group["weight_decay"]) == (3e-4, (0.9, 0.95), 1e-4)
    assert group["fused"] and not group["amsgrad"]  # AdamW, one fused kernel
    defaults = nb.fit.__defaults__  # amp, epochs, warm-up, batch size, lr, seed, ...
    assert defaults[1:6] == (20, 8, 128, 3e-4, 8851)


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
    nb.train_epoch(model, opt, x[:256], y[:256], 1.0, torch.Generator(), False, 64, "test")
    assert len(norms) == 4 and max(norms) <= 1.0 + 1e-4
    assert min(norms) > 0.99  # the clip was active, so the check is not vacuous


def test_bf16_path_and_fp32_give_the_same_loss(nb, small_data):
    (x, y), _ = small_data
    torch.manual_seed(0)
    model = nb.CVAE().to(memory_format=torch.channels_last)
    nn.init.normal_(model.dec_conv[-1].weight, std=0.05)
    terms = {amp: nb.elbo_terms(model, x[:128], y[:128], torch.Generator().manual_seed(1), amp)
             for amp in (False, True)}
    for fp32, bf16 in zip(terms[False], terms[True]):
        assert bf16.dtype == torch.float32  # the loss itself stays in fp32
        assert torch.allclose(bf16.mean(), fp32.mean(), rtol=1e-2)
        assert not torch.equal(bf16, fp32)  # bf16 did run


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
    _, h = nb.fit(1.0, ((x[:2048], y[:2048]), (xt[:500], yt[:500])), CPU, epochs=2,
                  warmup_epochs=0, seed=1, ckpt_dir=tmp_path, log=quiet)
    assert h["epoch"] == [1, 2] and h["beta_eff"] == [1.0, 1.0]
    assert h["train_loss"][-1] < h["train_loss"][0] - 20
    assert h["val_loss"][-1] < h["val_loss"][0]


def test_same_seed_same_result_other_seed_other_result(nb, small_data, tmp_path):
    runs = [nb.fit(4.0, small_data, CPU, epochs=1, seed=s, ckpt_dir=tmp_path / str(i),
                   log=quiet) for i, s in enumerate((7, 7, 8))]
    (m1, h1), (m2, h2), (_, h3) = runs
    assert h1["train_loss"] == h2["train_loss"] and h1["val_loss"] == h2["val_loss"]
    assert all(torch.equal(a, b) for a, b in zip(m1.parameters(), m2.parameters()))
    assert h3["train_loss"] != h1["train_loss"]


def test_validation_is_the_mean_of_the_per_image_terms(nb, small_data, tmp_path):
    (x, y), (xt, yt) = small_data
    model, h = nb.fit(4.0, small_data, CPU, epochs=2, warmup_epochs=4, ckpt_dir=tmp_path,
                      log=quiet)
    recon, kl = nb.evaluate(model, xt, yt, seed=8851)
    assert h["val_recon"][-1] == pytest.approx(recon.mean().item(), rel=1e-6)
    assert h["val_loss"][-1] == pytest.approx((recon + 2.0 * kl).mean().item(), rel=1e-6)


def test_inference_does_not_depend_on_the_chunk_size(nb, small_data, monkeypatch):
    """Chunks of a multiple of 8 images draw the same noise as one big batch."""
    (x, y), _ = small_data
    torch.manual_seed(2)
    model = nb.CVAE()
    nn.init.normal_(model.dec_conv[-1].weight, std=0.1)
    runs = []
    for batch in (256, 64, 40):
        monkeypatch.setattr(nb.chunked, "__defaults__", (batch,))
        runs.append(nb.evaluate(model, x, y, seed=9))
    for recon, kl in runs[1:]:
        assert torch.allclose(recon, runs[0][0], rtol=1e-5) and torch.equal(kl, runs[0][1])
