"""make bench: the notebook's training step against a naive loop, here, now.

The notebook's path is its own `fit`, timed inside: the model in channels-last,
fused AdamW with LR from the parameters cell and the assignment's `ADAMW`,
`train_epoch` on the images held in memory, under the notebook's precision
context (bf16 autocast where the hardware has bf16 natively, else fp32). Only
`train_epoch` is timed, so validation and the checkpoint do not count.

The naive loop is what a typical submission writes: a `DataLoader` over
`datasets.MNIST` with `ToTensor` (shuffled, batches of BATCH_SIZE), the
notebook's `CVAE` in the default contiguous layout in fp32 without autocast,
non-fused AdamW with the same LR and `ADAMW`, and per batch eps ~ N(0, I), the
forward pass, the loss written out (BCE with logits summed over the pixels plus
the KL, the batch mean, beta = 1), zero_grad, backward, clip_grad_norm_ to 1.0
and step. Both train with beta = 1 on BENCH_BATCHES batches per timed run.

Interleaved rounds (notebook path, naive loop, again ...) so that drift in the
machine's speed hits both; throughputs are medians over rounds, the speed-up
the median of the per-round ratios. Also: this machine's matmul peak in fp32
and bf16, the GFLOP/s the training step achieves, the projected training time
of the full run (len(BETAS) models x EPOCHS epochs) and its floor (the same
FLOPs at the matmul peak). Writes build/bench.json.
"""
import json
import os
import statistics
import tempfile
import time

import torch
import torch.nn.functional as F
from torch.utils.data import DataLoader
from torch.utils.flop_counter import FlopCounterMode
from torchvision import datasets, transforms

from nbdefs import ROOT, load_notebook_defs, mnist_root, notebook_parameters

ROUNDS = int(os.environ.get("BENCH_ROUNDS", 4))
BATCHES = int(os.environ.get("BENCH_BATCHES", 40))  # per timed run


def matmul_gflops(dtype, n=2048, reps=10):
    a, b = torch.randn(n, n, dtype=dtype), torch.randn(n, n, dtype=dtype)
    a @ b
    start = time.perf_counter()
    for _ in range(reps):
        a @ b
    return 2 * n**3 * reps / (time.perf_counter() - start) / 1e9


def naive_epoch(nb, model, opt, loader, batches):
    """The plain loop: contiguous fp32 batches, the loss written out."""
    model.train()
    for i, (x, y) in enumerate(loader):
        if i == batches:
            break
        eps = torch.randn(len(x), nb.LATENT_DIM)
        mu, logvar = model.encode(x, y)
        logits = model.decode(mu + torch.exp(0.5 * logvar) * eps, y)
        recon = F.binary_cross_entropy_with_logits(
            logits, x, reduction="none").flatten(1).sum(1)
        kl = 0.5 * (mu.pow(2) + logvar.exp() - 1 - logvar).sum(1)
        loss = (recon + kl).mean()
        opt.zero_grad()
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), nb.GRAD_CLIP)
        opt.step()


def quiet(message):  # a log that keeps the benchmark's output short
    pass


def notebook_run(nb, params, data, precision):
    """Images per second of train_epoch, as the notebook's fit runs it."""
    train_epoch = nb.train_epoch
    seconds = []

    def timed(*args, **kwargs):
        start = time.perf_counter()
        result = train_epoch(*args, **kwargs)
        seconds.append(time.perf_counter() - start)
        return result
    nb.train_epoch = timed  # fit looks it up in the notebook's namespace
    try:
        with tempfile.TemporaryDirectory() as ckpt_dir:
            nb.fit(1.0, data, (data[0][:1], data[1][:1]), epochs=1,
                   warmup_epochs=0, batch_size=params["BATCH_SIZE"],
                   lr=params["LR"], seed=0, device=torch.device("cpu"),
                   precision=precision, ckpt_dir=ckpt_dir, log=quiet)
    finally:
        nb.train_epoch = train_epoch
    return len(data[0]) / seconds[0]


def naive_run(nb, model, opt, loader):
    start = time.perf_counter()
    naive_epoch(nb, model, opt, loader, BATCHES)
    return BATCHES * loader.batch_size / (time.perf_counter() - start)


def flops_per_image(nb, params, loader, x, y):
    """FLOPs of one training image (the naive loop's batch: encoder, decoder,
    loss, backward) and of one validated image (the notebook's evaluate)."""
    model = nb.CVAE()
    opt = torch.optim.AdamW(model.parameters(), lr=params["LR"], **nb.ADAMW)
    with FlopCounterMode(display=False) as counter:
        naive_epoch(nb, model, opt, loader, 1)
    train = counter.get_total_flops() / loader.batch_size
    with FlopCounterMode(display=False) as counter:
        nb.evaluate(nb.CVAE(), x[:loader.batch_size], y[:loader.batch_size], 0)
    return train, counter.get_total_flops() / loader.batch_size


def rounds(nb, params, data, precision, loader):
    """Interleaved timed runs: per round the two throughputs."""
    naive_model = nb.CVAE()
    naive_opt = torch.optim.AdamW(naive_model.parameters(), lr=params["LR"],
                                  **nb.ADAMW)
    notebook_run(nb, params, data, precision)  # warm-up
    naive_run(nb, naive_model, naive_opt, loader)
    fast, naive = [], []
    for r in range(ROUNDS):
        fast.append(notebook_run(nb, params, data, precision))
        naive.append(naive_run(nb, naive_model, naive_opt, loader))
        print(f"round {r + 1}/{ROUNDS}: notebook {fast[-1]:6.0f} img/s, "
              f"naive {naive[-1]:6.0f} img/s, "
              f"ratio {fast[-1] / naive[-1]:.2f}", flush=True)
    return fast, naive


def report(result):
    out = ROOT / "build"
    out.mkdir(parents=True, exist_ok=True)
    (out / "bench.json").write_text(json.dumps(result, indent=2))
    print(f"\nnotebook path ({result['compute_path']}): "
          f"{result['notebook_median_images_per_s']:.0f} img/s; naive loop: "
          f"{result['naive_median_images_per_s']:.0f} img/s")
    print(f"speed-up (median of per-round ratios): "
          f"{result['speedup_median']:.2f}x")
    print(f"{result['gflop_per_training_image']:.3f} GFLOP per training "
          f"image; achieved {result['achieved_gflops_notebook']:.0f} GFLOP/s;"
          f" matmul peak here {result['matmul_peak_gflops']['fp32']:.0f} "
          f"GFLOP/s fp32, {result['matmul_peak_gflops']['bf16']:.0f} bf16")
    print(f"projected training of the full run: "
          f"{result['projected_training_minutes']:.1f} min; at the matmul "
          f"peak: {result['training_minutes_at_matmul_peak']:.1f} min")
    print(f"wrote {out / 'bench.json'}")


def main():
    nb = load_notebook_defs()
    params = notebook_parameters()
    root = mnist_root()
    x_tr, y_tr = nb.load_mnist(root, train=True, download=False)
    x_te, y_te = nb.load_mnist(root, train=False, download=False)
    precision = nb.precision_context(torch.device("cpu"))  # the notebook's
    batch = params["BATCH_SIZE"]
    data = (x_tr[:BATCHES * batch], y_tr[:BATCHES * batch])
    loader = DataLoader(datasets.MNIST(root, train=True,
                                       transform=transforms.ToTensor()),
                        batch_size=batch, shuffle=True)
    fast, naive = rounds(nb, params, data, precision, loader)
    train_flop, eval_flop = flops_per_image(nb, params, loader, x_tr, y_tr)
    peak = {"fp32": matmul_gflops(torch.float32),
            "bf16": matmul_gflops(torch.bfloat16)}
    start = time.perf_counter()
    nb.evaluate(nb.CVAE(), x_te, y_te, 0, precision.ctx)
    epoch_s = len(x_tr) / statistics.median(fast) + time.perf_counter() - start
    runs = len(params["BETAS"]) * params["EPOCHS"]
    run_flop = runs * (len(x_tr) * train_flop + len(x_te) * eval_flop)
    bf16 = precision.dtype == torch.bfloat16
    report({
        "threads": torch.get_num_threads(), "torch": torch.__version__,
        "compute_path": "bf16 autocast" if bf16 else "fp32",
        "rounds": ROUNDS, "images_per_run": len(data[0]),
        "notebook_images_per_s": fast, "naive_images_per_s": naive,
        "notebook_median_images_per_s": statistics.median(fast),
        "naive_median_images_per_s": statistics.median(naive),
        "speedup_median": statistics.median(
            [a / b for a, b in zip(fast, naive)]),
        "gflop_per_training_image": train_flop / 1e9,
        "achieved_gflops_notebook": statistics.median(fast) * train_flop / 1e9,
        "matmul_peak_gflops": peak,
        "projected_training_minutes": runs * epoch_s / 60,
        "training_minutes_at_matmul_peak":
            run_flop / (peak["bf16" if bf16 else "fp32"] * 1e9) / 60})


if __name__ == "__main__":
    main()
