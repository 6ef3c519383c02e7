"""Schedule, optimizer, clipping, the fast path, and short real trainings."""
import subprocess
import sys
from pathlib import Path

import pytest
import torch
import torch.nn as nn


@pytest.mark.parametrize("beta, expected", [
    (1.0, {1: 0.125, 4: 0.5, 8: 1.0, 9: 1.0, 20: 1.0}),
    (4.0, {1: 0.5, 4: 2.0, 8: 4.0, 9: 4.0, 20: 4.0}),
])
def test_beta_warmup_counts_epochs_from_one(nb, beta, expected):
    assert {e: nb.beta_schedule(beta, e, 8) for e in expected} == expected


def test_beta_warmup_of_zero_epochs_is_no_warmup(nb):
    assert nb.beta_schedule(4.0, 1, 0) == 4.0


def test_optimizer_hyperparameters(nb):
    opt = nb.make_optimizer(nb.CVAE(), nb.Config())
    group = opt.param_groups[0]
    assert isinstance(opt, torch.optim.AdamW)
    assert (group["lr"], group["betas"], group["weight_decay"]) == (3e-4, (0.9, 0.95), 1e-4)
    assert nb.Config().batch_size == 128 and nb.Config().grad_clip == 1.0


def test_gradient_norm_is_clipped_before_every_step(nb, small_data, monkeypatch):
    """Record the total gradient norm that each optimizer step sees."""
    (x, y), _ = small_data
    cfg = nb.Config(epochs=1, warmup_epochs=0, batch_size=64)
    model = nb.CVAE()
    nn.init.normal_(model.dec_conv[-1].weight, std=1.0)  # large gradients to clip
    opt = nb.make_optimizer(model, cfg)
    norms, step = [], opt.step
    def recording_step(*args, **kwargs):
        grads = [p.grad for p in model.parameters() if p.grad is not None]
        norms.append(torch.linalg.vector_norm(torch.stack(
            [torch.linalg.vector_norm(g) for g in grads])).item())
        return step(*args, **kwargs)
    monkeypatch.setattr(opt, "step", recording_step)
    nb.train_epoch(model, opt, x[:256], y[:256], 1.0, cfg, torch.Generator(), None)
    assert len(norms) == 4 and max(norms) <= 1.0 + 1e-4
    assert max(norms) > 0.99  # the clip was active, so the check is not vacuous


def test_fast_path_and_fp32_give_the_same_loss(nb, small_data):
    (x, y), _ = small_data
    torch.manual_seed(0)
    model = nb.CVAE().to(memory_format=torch.channels_last)
    nn.init.normal_(model.dec_conv[-1].weight, std=0.05)
    xb = x[:128].contiguous(memory_format=torch.channels_last)
    terms = {amp: nb.vae_loss(model, xb, y[:128], 1.0, torch.Generator().manual_seed(1), amp)
             for amp in (None, torch.bfloat16)}
    for fp32, bf16 in zip(terms[None], terms[torch.bfloat16]):
        assert bf16.dtype == torch.float32
        assert torch.allclose(bf16, fp32, rtol=1e-2, atol=0.05)


def test_short_training_lowers_the_loss(nb, mnist, tmp_path):
    (x, y), (xt, yt) = mnist
    cfg = nb.Config(epochs=2, warmup_epochs=0, seed=1)
    _, h = nb.fit(1.0, ((x[:2048], y[:2048]), (xt[:500], yt[:500])), cfg,
                  torch.device("cpu"), ckpt_dir=tmp_path, log=lambda s: None)
    assert h["epoch"] == [1, 2]
    assert h["train_loss"][-1] < h["train_loss"][0] - 20
    assert h["val_loss"][-1] < h["val_loss"][0]


def test_same_seed_same_result(nb, small_data, tmp_path):
    cfg = nb.Config(epochs=1, seed=7)
    runs = [nb.fit(4.0, small_data, cfg, torch.device("cpu"), ckpt_dir=tmp_path / str(i),
                   log=lambda s: None) for i in range(2)]
    (m1, h1), (m2, h2) = runs
    assert h1["train_loss"] == h2["train_loss"] and h1["val_loss"] == h2["val_loss"]
    assert all(torch.equal(a, b) for a, b in zip(m1.parameters(), m2.parameters()))
    _, h3 = nb.fit(4.0, small_data, nb.Config(epochs=1, seed=8), torch.device("cpu"),
                   ckpt_dir=tmp_path / "other", log=lambda s: None)
    assert h3["train_loss"] != h1["train_loss"]


FAULTS_SCRIPT = """
import resource, sys, torch
sys.path.insert(0, sys.argv[1])
from nbdefs import load_notebook_defs
nb = load_notebook_defs()
cfg = nb.Config()
model = nb.CVAE().to(memory_format=torch.channels_last)
opt = nb.make_optimizer(model, cfg)
x, y = torch.rand(1024, 1, 28, 28), torch.randint(0, 10, (1024,))
amp = nb.amp_dtype_for(torch.device("cpu"))
def faults_per_step():
    nb.train_epoch(model, opt, x[:256], y[:256], 1.0, cfg, torch.Generator(), amp)
    before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
    nb.train_epoch(model, opt, x, y, 1.0, cfg, torch.Generator(), amp)
    return (resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before) / 8
print(faults_per_step(), nb.keep_freed_memory(), faults_per_step())
"""


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="glibc only")
def test_keeping_freed_memory_ends_the_page_faults_of_training():
    """In a fresh process, training steps page-fault thousands of times by
    default (glibc unmaps freed activations); after keep_freed_memory(), few."""
    out = subprocess.run([sys.executable, "-c", FAULTS_SCRIPT, str(Path(__file__).parent)],
                         capture_output=True, text=True, check=True).stdout.split()
    before, kept, after = float(out[0]), out[1], float(out[2])
    assert kept == "True"
    assert before > 1000 and after < 0.1 * before, (before, after)
