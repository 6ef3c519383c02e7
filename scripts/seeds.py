"""make seeds: Part 5's key numbers for three seeds per beta, with the notebook's own code.

Trains beta = 1 and beta = 4 (the notebook's BETAS) for SEED, SEED + 1 and SEED + 2 with
the notebook's `fit` and the settings of its parameters cell, reusing the notebook's
checkpoints (checkpoints/, named by a hash of the settings: SEED's models are the ones the
notebook trained), measures each model with the notebook's functions and writes
figures/seeds.json after every model. Interrupted, it resumes: models already in the file
(with the same settings) are skipped, an interrupted training continues from its last epoch.

    python scripts/seeds.py                      # the full replication (make seeds)
    python scripts/seeds.py --seeds 2 --n-train 512 --n-test 256 --epochs 1 --out x.json
"""
import argparse
import json
import os
import platform
import sys
import time
from contextlib import nullcontext
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tests"))
from nbdefs import load_notebook_defs, notebook_parameters  # noqa: E402


def cpu_name():
    info = Path("/proc/cpuinfo")
    if info.exists():
        for line in info.read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    return platform.processor() or platform.machine()


def measure(nb, model, history, seed, test, judge, standardised, spread, grid_n, ctx):
    """One model's numbers, computed as the notebook computes them."""
    x, y = test
    recon, kl = nb.evaluate(model, x, y, seed, ctx)
    log_px = nb.quadrature(model, x, grid_n, ctx=ctx)
    nll = nb.nll_of_label(log_px, y)
    mu, logvar = nb.chunked(model, model.encode, x, y)
    shuffled = y[torch.randperm(len(y), generator=torch.Generator().manual_seed(seed))]
    code = nb.code_stats(mu, logvar, standardised)
    effects = nb.traversal_effects(model, spread).abs()  # (axis, digit, factor)
    medians = effects.quantile(0.5, dim=1)  # (axis, factor)
    values = {"val - train loss, last epoch": history["val_loss"][-1]
              - history["train_loss"][-1],
              "test -ELBO": (recon + kl).mean().item(),
              "-log p(x|y)": nll.mean().item(),
              "ELBO gap": (recon + kl - nll).mean().item(),
              "KL, both axes": sum(code["KL"]),
              "mean sigma, both axes": sum(code["mean sigma"]) / 2,
              "active units": code["active units"],
              "argmax log p(x|y) (%)": nb.per_digit_accuracy(log_px.argmax(1), y)["all"],
              "judge on samples (%)": nb.judge_samples(judge, model, seed)["all"],
              "15-NN vote (%)": 100 * nb.knn_accuracy(mu, y),
              "15-NN, shuffled labels (%)": 100 * nb.knn_accuracy(mu, shuffled),
              "code alignment score": code["alignment score"],
              "traversal alignment score": nb.alignment(medians.T)}
    for i, name in enumerate(nb.FACTORS):
        values[f"{name}: stronger axis"] = medians[:, i].max().item()
    return {"values": values, "code": code, "traversal effects": effects.tolist()}


def main():
    params = notebook_parameters()
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", type=int, default=3, help="seeds per beta")
    parser.add_argument("--epochs", type=int, default=params["EPOCHS"])
    parser.add_argument("--n-train", type=int, default=None, help="default: all")
    parser.add_argument("--n-test", type=int, default=None, help="default: all")
    parser.add_argument("--grid", type=int, default=params["GRID_N"] // 2 + 1,
                        help="quadrature nodes per axis (the notebook's test set)")
    parser.add_argument("--out", type=Path, default=ROOT / "figures" / "seeds.json")
    parser.add_argument("--ckpt-dir", type=Path, default=ROOT / "checkpoints")
    parser.add_argument("--data-root", default=os.environ.get("MNIST_ROOT", ROOT / "data"))
    args = parser.parse_args()

    nb = load_notebook_defs()
    device = torch.device(params["DEVICE"])
    ctx = nullcontext()
    if nb.bf16_native(device):  # as the notebook chooses it
        ctx = torch.autocast(device.type, dtype=torch.bfloat16)
    (x, y), (x_test, y_test) = nb.load_mnist(args.data_root, download=False)
    train, test = (x[:args.n_train], y[:args.n_train]), (x_test[:args.n_test], y_test[:args.n_test])
    seeds = [params["SEED"] + i for i in range(args.seeds)]
    settings = dict(betas=list(params["BETAS"]), epochs=args.epochs,
                    warmup_epochs=params["WARMUP_EPOCHS"], batch_size=params["BATCH_SIZE"],
                    lr=params["LR"], n_train=len(train[0]), n_test=len(test[0]),
                    grid=args.grid, device=device.type, torch=torch.__version__)
    out = {"settings": settings, "seeds": seeds, "machine": cpu_name(), "seconds": 0.0,
           "runs": {}}
    if args.out.exists():
        saved = json.loads(args.out.read_text())
        if saved["settings"] == settings:  # resume: keep what is measured
            out["seconds"] = saved["seconds"]
            out["runs"] = {s: saved["runs"][s] for s in map(str, seeds) if s in saved["runs"]}
    t0, seconds = time.perf_counter(), out["seconds"]
    judge = nb.train_judge(*train, device, seed=params["SEED"], ctx=ctx)
    factors = torch.cat([nb.morphometrics(part) for part in test[0].split(500)])
    mean, spread = nb.digit_spread(factors, test[1])
    standardised = (factors - mean[test[1]]) / spread[test[1]]  # within digit
    for seed in seeds:
        for beta in params["BETAS"]:
            runs = out["runs"].setdefault(str(seed), {})
            if nb.tag(beta) in runs:
                print(f"seed {seed}, {nb.tag(beta)}: in {args.out.name} already", flush=True)
                continue
            model, history = nb.fit(beta, (train, test), epochs=args.epochs,
                              warmup_epochs=params["WARMUP_EPOCHS"],
                              batch_size=params["BATCH_SIZE"], lr=params["LR"], seed=seed,
                              device=device, ctx=ctx, ckpt_dir=args.ckpt_dir,
                              log=lambda message: print(message, flush=True))
            runs[nb.tag(beta)] = measure(nb, model, history, seed, test, judge,
                                         standardised, spread, args.grid, ctx)
            runs[nb.tag(beta)]["training minutes"] = sum(history["seconds"]) / 60
            out["seconds"] = seconds + time.perf_counter() - t0
            args.out.parent.mkdir(parents=True, exist_ok=True)
            args.out.with_suffix(".tmp").write_text(json.dumps(out, indent=1))
            os.replace(args.out.with_suffix(".tmp"), args.out)  # atomic
            print(f"seed {seed}, {nb.tag(beta)}: measured, {args.out} written", flush=True)


if __name__ == "__main__":
    main()
