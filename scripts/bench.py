"""make bench: the notebook's own training step against a naive loop, on this machine, now.

The notebook's path is what its `fit` runs: the model in channels-last, fused AdamW with
LR from the parameters cell and the assignment's settings `ADAMW`, and `train_epoch` on
the images held in memory, under the notebook's precision context (bf16 autocast where
the CPU has bf16 natively, else fp32). The naive loop is the plain loop a typical
submission writes: a `DataLoader` over `datasets.MNIST` with `ToTensor` (shuffled, batches
of BATCH_SIZE), the notebook's `CVAE` in the default contiguous layout with fp32 inputs
and weights and no autocast, non-fused AdamW with the same LR and `ADAMW`, and per batch
eps ~ N(0, I), the forward pass, the loss written out (BCE with logits summed over the
pixels plus the KL, the batch mean, beta = 1), zero_grad, backward, clip_grad_norm_ to
1.0 and step. Both train with beta = 1 on BENCH_BATCHES batches per timed run.

Interleaved rounds (notebook path, then naive loop, then again ...) so that drift in the
machine's speed hits both; throughputs are medians over rounds and the speed-up is the
median of the per-round ratios. Also: this machine's matmul peak in fp32 and bf16, the
GFLOP/s the training step achieves, the projected training time of the full run
(len(BETAS) models x EPOCHS epochs, from the parameters cell) and its floor (the same
FLOPs at the matmul peak). Writes build/bench.json.
"""
import json
import os
import statistics
import time

import torch
import torch.nn.functional as F
from torch.utils.data import DataLoader
from torch.utils.flop_counter import FlopCounterMode
from torchvision import datasets, transforms

from nbdefs import ROOT, load_notebook_defs, mnist_root, notebook_parameters

ROUNDS = int(os.environ.get("BENCH_ROUNDS", 4))
BATCHES = int(os.environ.get("BENCH_BATCHES", 40))  # per timed run, BATCH_SIZE images each


def matmul_gflops(dtype, n=2048, reps=10):
    a, b = torch.randn(n, n, dtype=dtype), torch.randn(n, n, dtype=dtype)
    a @ b
    t = time.perf_counter()
    for _ in range(reps):
        a @ b
    return 2 * n**3 * reps / (time.perf_counter() - t) / 1e9


def naive_epoch(model, opt, loader, batches):
    """The plain loop: contiguous fp32 batches from the loader, the loss written out."""
    model.train()
    for i, (x, y) in enumerate(loader):
        if i == batches:
            break
        eps = torch.randn(len(x), 2)
        mu, logvar = model.encode(x, y)
        logits = model.decode(mu + torch.exp(0.5 * logvar) * eps, y)
        recon = F.binary_cross_entropy_with_logits(
            logits, x, reduction="none").flatten(1).sum(1)
        kl = 0.5 * (mu.pow(2) + logvar.exp() - 1 - logvar).sum(1)
        loss = (recon + kl).mean()
        opt.zero_grad()
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()


def main():
    nb = load_notebook_defs()
    params = notebook_parameters()
    lr = params["LR"]
    batch = params["BATCH_SIZE"]
    epochs = params["EPOCHS"]
    n_models = len(params["BETAS"])
    root = mnist_root()
    x_tr, y_tr = nb.load_mnist(root, train=True, download=False)
    x_te, y_te = nb.load_mnist(root, train=False, download=False)
    cpu = torch.device("cpu")
    ctx = nb.precision_context(cpu)  # the notebook's choice
    amp = isinstance(ctx, torch.autocast)
    n_images = BATCHES * batch

    # the notebook's path: its own train_epoch on in-memory tensors, set up as fit() does
    torch.manual_seed(0)
    model = nb.CVAE().to(cpu, memory_format=torch.channels_last)
    opt = torch.optim.AdamW(model.parameters(), lr=lr, fused=True, **nb.ADAMW)
    gen = torch.Generator(cpu).manual_seed(0)
    x = x_tr[:n_images]
    y = y_tr[:n_images]

    def notebook_run():
        t = time.perf_counter()
        nb.train_epoch(model, opt, x, y, beta_eff=1.0, batch_size=batch, gen=gen,
                       ctx=ctx, name="bench")
        return n_images / (time.perf_counter() - t)

    # the naive loop: DataLoader + ToTensor, contiguous fp32, non-fused AdamW
    naive_model = nb.CVAE()
    naive_opt = torch.optim.AdamW(naive_model.parameters(), lr=lr, **nb.ADAMW)
    loader = DataLoader(datasets.MNIST(root, train=True, transform=transforms.ToTensor()),
                        batch_size=batch, shuffle=True)

    def naive_run():
        t = time.perf_counter()
        naive_epoch(naive_model, naive_opt, loader, BATCHES)
        return n_images / (time.perf_counter() - t)

    notebook_run(), naive_run()  # warm-up
    fast = []  # images per second of each round
    naive = []
    ratios = []
    for r in range(ROUNDS):
        fast.append(notebook_run())
        naive.append(naive_run())
        ratios.append(fast[-1] / naive[-1])
        print(f"round {r + 1}/{ROUNDS}: notebook {fast[-1]:6.0f} img/s, naive "
              f"{naive[-1]:6.0f} img/s, ratio {ratios[-1]:.2f}", flush=True)

    # FLOPs of one training image: one batch of the naive loop on a fresh model, i.e.
    # the encoder, the decoder, the loss and its backward (clipping and AdamW do no matmuls)
    flop_model = nb.CVAE()
    flop_opt = torch.optim.AdamW(flop_model.parameters(), lr=lr, **nb.ADAMW)
    with FlopCounterMode(display=False) as counter:
        naive_epoch(flop_model, flop_opt, loader, 1)
    train_flop = counter.get_total_flops() / batch
    # and of one validated image: the notebook's evaluate (forward pass only)
    with FlopCounterMode(display=False) as counter:
        nb.evaluate(nb.CVAE(), x_tr[:batch], y_tr[:batch], 0)
    eval_flop = counter.get_total_flops() / batch
    peak = {"fp32": matmul_gflops(torch.float32), "bf16": matmul_gflops(torch.bfloat16)}

    t = time.perf_counter()
    nb.evaluate(model, x_te, y_te, 0, ctx)
    eval_s = time.perf_counter() - t
    fast_med = statistics.median(fast)
    epoch_s = len(x_tr) / fast_med + eval_s
    full_min = n_models * epochs * epoch_s / 60
    peak_path = peak["bf16" if amp else "fp32"]
    run_flop = n_models * epochs * (len(x_tr) * train_flop + len(x_te) * eval_flop)
    floor_min = run_flop / (peak_path * 1e9) / 60
    result = {
        "machine": {"threads": torch.get_num_threads(), "torch": torch.__version__,
                    "compute_path": "bf16 autocast" if amp else "fp32"},
        "settings": {"lr": lr, "adamw": nb.ADAMW, "batch_size": batch, "epochs": epochs,
                     "models": n_models},
        "rounds": ROUNDS, "images_per_run": n_images,
        "notebook_images_per_s": fast, "naive_images_per_s": naive,
        "notebook_median_images_per_s": fast_med,
        "naive_median_images_per_s": statistics.median(naive),
        "speedup_median": statistics.median(ratios),
        "gflop_per_training_image": train_flop / 1e9,
        "achieved_gflops_notebook": fast_med * train_flop / 1e9,
        "achieved_gflops_naive": statistics.median(naive) * train_flop / 1e9,
        "matmul_peak_gflops": peak,
        "eval_seconds_10k": eval_s,
        "projected_epoch_seconds": epoch_s,
        "projected_training_minutes": full_min,
        "training_minutes_at_matmul_peak": floor_min,
    }
    out = ROOT / "build"
    out.mkdir(parents=True, exist_ok=True)
    (out / "bench.json").write_text(json.dumps(result, indent=2))
    print(f"\nnotebook path ({result['machine']['compute_path']}, channels-last, fused "
          f"AdamW): {fast_med:.0f} img/s; naive loop (DataLoader + ToTensor, contiguous "
          f"fp32, AdamW): {result['naive_median_images_per_s']:.0f} img/s")
    print(f"speed-up (median of per-round ratios): {result['speedup_median']:.2f}x")
    print(f"{train_flop / 1e9:.3f} GFLOP per training image; achieved "
          f"{result['achieved_gflops_notebook']:.0f} GFLOP/s (naive "
          f"{result['achieved_gflops_naive']:.0f}); matmul peak here {peak['fp32']:.0f} "
          f"GFLOP/s fp32, {peak['bf16']:.0f} GFLOP/s bf16")
    print(f"projected full run: {epoch_s:.0f} s/epoch incl. {eval_s:.1f} s validation -> "
          f"{full_min:.1f} min of training for {n_models} models x {epochs} epochs")
    print(f"floor: the same {run_flop / 1e12:.0f} TFLOP at the {peak_path:.0f} GFLOP/s "
          f"matmul peak would take {floor_min:.1f} min ({100 * floor_min / full_min:.0f} % "
          "of the projection)")
    print(f"wrote {out / 'bench.json'}")


if __name__ == "__main__":
    main()
