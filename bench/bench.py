"""make bench: the notebook's training step against a naive loop, on this machine, now.

Interleaved rounds (notebook path, then naive loop, then again ...) so that drift in the
machine's speed hits both; throughputs are medians over rounds and the speed-up is the
median of the per-round ratios. The naive loop runs in a process of its own, so it keeps
glibc's default memory handling while the notebook path keeps freed memory (its
keep_freed_memory(), as the notebook does); that process also times the notebook path
without the setting. Also: this machine's matmul peak in fp32 and bf16, the GFLOP/s
the training step achieves, the projected time of the full notebook run's training, and
its floor: the same FLOPs at the matmul peak.
Writes bench/results/bench.json.
"""
import json
import multiprocessing as mp
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


def notebook_runner(nb, cfg, x, y, amp):
    """The notebook's path: its own train_epoch on in-memory tensors (x, y); the returned
    function trains one pass and answers with images/s."""
    torch.manual_seed(0)
    model = nb.CVAE().to(memory_format=torch.channels_last)
    opt, gen = nb.make_optimizer(model, cfg), torch.Generator().manual_seed(0)

    def run():
        t = time.perf_counter()
        nb.train_epoch(model, opt, x, y, 1.0, cfg, gen, amp)
        return len(x) / (time.perf_counter() - t)
    return run


def default_memory_worker(conn, root):
    """A process with glibc's default memory handling. "naive": the loop of a typical
    submission (DataLoader + ToTensor, fp32, same model and loss); "notebook": the
    notebook's train_epoch without keep_freed_memory(). Answers with images/s."""
    nb = load_notebook_defs()
    cfg = nb.Config()
    n_images = BATCHES * cfg.batch_size
    torch.manual_seed(0)
    model = nb.CVAE()
    opt = torch.optim.AdamW(model.parameters(), lr=cfg.lr, betas=cfg.adam_betas,
                            weight_decay=cfg.weight_decay)
    mnist = datasets.MNIST(root, train=True, transform=transforms.ToTensor())
    loader = DataLoader(mnist, batch_size=cfg.batch_size, shuffle=True)
    x = mnist.data[:n_images].unsqueeze(1).float().div_(255)
    amp = nb.amp_dtype_for(torch.device("cpu"), cfg.precision)
    notebook_run = notebook_runner(nb, cfg, x, mnist.targets[:n_images], amp)
    while (command := conn.recv()) != "stop":
        if command == "notebook":
            conn.send(notebook_run())
        else:
            t = time.perf_counter()
            model.train()
            for i, (xb, yb) in enumerate(loader):
                if i == BATCHES:
                    break
                loss, _, _ = nb.vae_loss(model, xb, yb, 1.0)
                opt.zero_grad()
                loss.backward()
                torch.nn.utils.clip_grad_norm_(model.parameters(), cfg.grad_clip)
                opt.step()
            conn.send(n_images / (time.perf_counter() - t))


def main():
    nb = load_notebook_defs()
    root = mnist_root()
    (x_tr, y_tr), (x_te, y_te) = nb.load_mnist(root, download=False)
    cpu, cfg = torch.device("cpu"), nb.Config()
    amp = nb.amp_dtype_for(cpu, cfg.precision)
    n_images = BATCHES * cfg.batch_size

    notebook_run = notebook_runner(nb, cfg, x_tr[:n_images], y_tr[:n_images], amp)

    # the naive loop, and the notebook path without the setting, in a process of its own
    child_end, worker = mp.get_context("spawn").Pipe()
    child = mp.get_context("spawn").Process(target=default_memory_worker, args=(worker, root),
                                            daemon=True)
    child.start()

    def in_child(command):
        child_end.send(command)
        return child_end.recv()

    kept = nb.keep_freed_memory()
    notebook_run(), in_child("naive"), in_child("notebook")  # warm-up
    fast_ips, naive_ips, ratios, default_mem_ips = [], [], [], []
    for r in range(ROUNDS):
        fast_ips.append(notebook_run())
        naive_ips.append(in_child("naive"))
        default_mem_ips.append(in_child("notebook"))
        ratios.append(fast_ips[-1] / naive_ips[-1])
        print(f"round {r + 1}/{ROUNDS}: notebook {fast_ips[-1]:6.0f} img/s, "
              f"naive {naive_ips[-1]:6.0f} img/s, ratio {ratios[-1]:.2f}; notebook path "
              f"with default memory handling {default_mem_ips[-1]:6.0f} img/s", flush=True)

    # FLOPs of one training image (forward + backward), counted by torch
    xb, yb = x_tr[:128].contiguous(memory_format=torch.channels_last), y_tr[:128]
    with FlopCounterMode(display=False) as counter:
        nb.vae_loss(nb.CVAE(), xb, yb, 1.0)[0].backward()
    flop_per_image = counter.get_total_flops() / 128
    with FlopCounterMode(display=False) as counter:
        nb.evaluate(nb.CVAE(), xb, yb, 1.0)
    eval_flop_per_image = counter.get_total_flops() / 128
    peak = {"fp32": matmul_gflops(torch.float32), "bf16": matmul_gflops(torch.bfloat16)}

    # evaluation throughput and the projected full run (2 models x 20 epochs)
    t = time.perf_counter()
    nb.evaluate(nb.CVAE().to(memory_format=torch.channels_last), x_te, y_te, 1.0, amp)
    eval_s = time.perf_counter() - t
    fast_med = statistics.median(fast_ips)
    epoch_s = len(x_tr) / fast_med + eval_s
    full_min = 2 * cfg.epochs * epoch_s / 60
    achieved = fast_med * flop_per_image / 1e9
    naive_achieved = statistics.median(naive_ips) * flop_per_image / 1e9
    # the floor: every FLOP of training and evaluation at the matmul peak of this path
    peak_path = peak["bf16" if amp else "fp32"]
    run_flop = 2 * cfg.epochs * (len(x_tr) * flop_per_image + len(x_te) * eval_flop_per_image)
    floor_min = run_flop / (peak_path * 1e9) / 60
    result = {
        "machine": {"threads": torch.get_num_threads(), "torch": torch.__version__,
                    "compute_path": "bf16 autocast" if amp else "fp32",
                    "freed_memory_kept": kept},
        "rounds": ROUNDS, "images_per_run": n_images,
        "notebook_images_per_s": fast_ips, "naive_images_per_s": naive_ips,
        "notebook_median_images_per_s": fast_med,
        "naive_median_images_per_s": statistics.median(naive_ips),
        "speedup_median": statistics.median(ratios),
        "notebook_default_memory_images_per_s": default_mem_ips,
        "keep_freed_memory_gain_median": statistics.median(
            f / d for f, d in zip(fast_ips, default_mem_ips)),
        "gflop_per_training_image": flop_per_image / 1e9,
        "achieved_gflops_notebook": achieved, "achieved_gflops_naive": naive_achieved,
        "matmul_peak_gflops": peak,
        "eval_seconds_10k": eval_s,
        "projected_epoch_seconds": epoch_s,
        "projected_training_minutes_2x20_epochs": full_min,
        "training_minutes_at_matmul_peak": floor_min,
        "fraction_of_matmul_peak": floor_min / full_min,
    }
    out = ROOT / "bench" / "results"
    out.mkdir(parents=True, exist_ok=True)
    (out / "bench.json").write_text(json.dumps(result, indent=2))
    print(f"\nnotebook path: {fast_med:.0f} img/s ({result['machine']['compute_path']}, "
          f"channels-last, fused AdamW, freed memory kept); naive loop: "
          f"{result['naive_median_images_per_s']:.0f}"
          f" img/s (DataLoader + ToTensor, fp32)")
    print(f"speed-up (median of per-round ratios): {result['speedup_median']:.2f}x "
          f"(goal >= 1.8x)")
    print(f"keeping freed memory alone (the notebook path with it vs without it): "
          f"{result['keep_freed_memory_gain_median']:.2f}x")
    print(f"{flop_per_image / 1e9:.3f} GFLOP per training image; achieved {achieved:.0f} "
          f"GFLOP/s (naive {naive_achieved:.0f}); matmul peak here {peak['fp32']:.0f} "
          f"GFLOP/s fp32, {peak['bf16']:.0f} GFLOP/s bf16")
    print(f"projected full run: {epoch_s:.0f} s/epoch incl. {eval_s:.1f} s evaluation -> "
          f"{full_min:.1f} min of training for 2 models x {cfg.epochs} epochs")
    print(f"floor: the same {run_flop / 1e12:.0f} TFLOP at the {peak_path:.0f} GFLOP/s matmul "
          f"peak would take {floor_min:.1f} min; this path runs at "
          f"{100 * floor_min / full_min:.0f} % of it")
    child_end.send("stop")
    child.join()
    print(f"wrote {out / 'bench.json'}")


if __name__ == "__main__":
    main()
