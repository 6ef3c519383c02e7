"""make bench: the notebook's own training step against a naive loop, on this machine, now.

Interleaved rounds (notebook path, then naive loop, then again ...) so that drift in the
machine's speed hits both; throughputs are medians over rounds and the speed-up is the
median of the per-round ratios. Also: this machine's matmul peak in fp32 and bf16, the
GFLOP/s the training step achieves, the projected training time of the full run (2 models
x 20 epochs) and its floor (the same FLOPs at the matmul peak).
Writes bench/results/bench.json.
"""
import json
import os
import statistics
import sys
import time
from pathlib import Path

import torch
from torch.utils.data import DataLoader
from torch.utils.flop_counter import FlopCounterMode
from torchvision import datasets, transforms

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tests"))
from nbdefs import load_notebook_defs  # noqa: E402

ROUNDS = int(os.environ.get("BENCH_ROUNDS", 4))
BATCHES = int(os.environ.get("BENCH_BATCHES", 40))  # per timed run, 128 images each
EPOCHS, BATCH = 20, 128  # the notebook's full run: 2 models x 20 epochs


def mnist_root():
    for root in (os.environ.get("MNIST_ROOT"), ROOT / "data", ROOT.parent / "shared" / "data"):
        if root and (Path(root) / "MNIST" / "raw" / "t10k-labels-idx1-ubyte").exists():
            return str(root)
    sys.exit("MNIST not found: run 'make data' or set MNIST_ROOT")


def matmul_gflops(dtype, n=2048, reps=10):
    a, b = torch.randn(n, n, dtype=dtype), torch.randn(n, n, dtype=dtype)
    a @ b
    t = time.perf_counter()
    for _ in range(reps):
        a @ b
    return 2 * n**3 * reps / (time.perf_counter() - t) / 1e9


def main():
    nb = load_notebook_defs()
    root = mnist_root()
    (x_tr, y_tr), (x_te, y_te) = nb.load_mnist(root, download=False)
    cpu = torch.device("cpu")
    amp = nb.bf16_native(cpu)
    n_images = BATCHES * BATCH

    # the notebook's path: its own train_epoch on in-memory tensors (what fit() runs)
    torch.manual_seed(0)
    model = nb.CVAE().to(memory_format=torch.channels_last)
    opt = torch.optim.AdamW(model.parameters(), lr=3e-4, betas=(0.9, 0.95),
                            weight_decay=1e-4, fused=True)
    gen, x, y = torch.Generator().manual_seed(0), x_tr[:n_images], y_tr[:n_images]

    def notebook_run():
        t = time.perf_counter()
        nb.train_epoch(model, opt, x, y, 1.0, gen, amp, BATCH, "bench")
        return n_images / (time.perf_counter() - t)

    # a naive loop as a typical submission writes it: DataLoader + ToTensor, fp32
    naive_model = nb.CVAE()
    naive_opt = torch.optim.AdamW(naive_model.parameters(), lr=3e-4, betas=(0.9, 0.95),
                                  weight_decay=1e-4)
    loader = DataLoader(datasets.MNIST(root, train=True, transform=transforms.ToTensor()),
                        batch_size=BATCH, shuffle=True)

    def naive_run():
        t = time.perf_counter()
        naive_model.train()
        for i, (xb, yb) in enumerate(loader):
            if i == BATCHES:
                break
            recon, kl = nb.elbo_terms(naive_model, xb, yb)
            loss = (recon + kl).mean()
            naive_opt.zero_grad()
            loss.backward()
            torch.nn.utils.clip_grad_norm_(naive_model.parameters(), 1.0)
            naive_opt.step()
        return n_images / (time.perf_counter() - t)

    notebook_run(), naive_run()  # warm-up
    fast, naive, ratios = [], [], []
    for r in range(ROUNDS):
        fast.append(notebook_run())
        naive.append(naive_run())
        ratios.append(fast[-1] / naive[-1])
        print(f"round {r + 1}/{ROUNDS}: notebook {fast[-1]:6.0f} img/s, naive "
              f"{naive[-1]:6.0f} img/s, ratio {ratios[-1]:.2f}", flush=True)

    # FLOPs of one training image (forward + backward) and of one validated image
    xb, yb = x_tr[:BATCH], y_tr[:BATCH]
    with FlopCounterMode(display=False) as counter:
        recon, kl = nb.elbo_terms(nb.CVAE(), xb, yb)
        (recon + kl).mean().backward()
    train_flop = counter.get_total_flops() / BATCH
    with FlopCounterMode(display=False) as counter:
        nb.evaluate(nb.CVAE(), xb, yb)
    eval_flop = counter.get_total_flops() / BATCH
    peak = {"fp32": matmul_gflops(torch.float32), "bf16": matmul_gflops(torch.bfloat16)}

    t = time.perf_counter()
    nb.evaluate(model, x_te, y_te, amp)
    eval_s = time.perf_counter() - t
    fast_med = statistics.median(fast)
    epoch_s = len(x_tr) / fast_med + eval_s
    full_min = 2 * EPOCHS * epoch_s / 60
    peak_path = peak["bf16" if amp else "fp32"]
    run_flop = 2 * EPOCHS * (len(x_tr) * train_flop + len(x_te) * eval_flop)
    floor_min = run_flop / (peak_path * 1e9) / 60
    result = {
        "machine": {"threads": torch.get_num_threads(), "torch": torch.__version__,
                    "compute_path": "bf16 autocast" if amp else "fp32"},
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
        "projected_training_minutes_2x20_epochs": full_min,
        "training_minutes_at_matmul_peak": floor_min,
    }
    out = ROOT / "bench" / "results"
    out.mkdir(parents=True, exist_ok=True)
    (out / "bench.json").write_text(json.dumps(result, indent=2))
    print(f"\nnotebook path ({result['machine']['compute_path']}, channels-last, fused "
          f"AdamW): {fast_med:.0f} img/s; naive loop (DataLoader + ToTensor, fp32): "
          f"{result['naive_median_images_per_s']:.0f} img/s")
    print(f"speed-up (median of per-round ratios): {result['speedup_median']:.2f}x")
    print(f"{train_flop / 1e9:.3f} GFLOP per training image; achieved "
          f"{result['achieved_gflops_notebook']:.0f} GFLOP/s (naive "
          f"{result['achieved_gflops_naive']:.0f}); matmul peak here {peak['fp32']:.0f} "
          f"GFLOP/s fp32, {peak['bf16']:.0f} GFLOP/s bf16")
    print(f"projected full run: {epoch_s:.0f} s/epoch incl. {eval_s:.1f} s validation -> "
          f"{full_min:.1f} min of training for 2 models x {EPOCHS} epochs")
    print(f"floor: the same {run_flop / 1e12:.0f} TFLOP at the {peak_path:.0f} GFLOP/s "
          f"matmul peak would take {floor_min:.1f} min ({100 * floor_min / full_min:.0f} % "
          "of the projection)")
    print(f"wrote {out / 'bench.json'}")


if __name__ == "__main__":
    main()
