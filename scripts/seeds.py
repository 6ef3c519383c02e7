"""make seeds: both models for five seeds, measured with the notebook's own `measure`.

Trains beta = 1 and beta = 4 (the notebook's BETAS) for SEED ... SEED + 4 with the
notebook's `fit` and the settings of its parameters cell, reusing its checkpoints
(checkpoints/, named by a hash of the settings: SEED's models are the notebook's own),
measures each model with the notebook's `measure` against the same judge and factors as
the notebook, draws each model's traversals and manifold of the digit 0 with the
notebook's `show_grids` (figures/seeds/), and writes figures/seeds.json after every
model. Interrupted, it resumes: models already in the file (same settings) are skipped,
an interrupted training continues from its last epoch.

    python scripts/seeds.py                      # the full replication (make seeds)
    python scripts/seeds.py --seeds 2 --n-train 512 --n-test 256 --epochs 1 --out x.json
"""
import argparse
import json
import os
import time
from functools import partial
from pathlib import Path

import matplotlib
import torch

from nbdefs import ROOT, cpu_name, load_notebook_defs, mnist_root, notebook_parameters

matplotlib.use("Agg")  # files only: no window, no warning from plt.show()
GRID_DPI = 100  # the per-seed grids: small files, digits still legible


def draw_grids(nb, model, seed, beta):
    """This model's Figures 6-9: traversals of every digit, the manifold of 0."""
    name = f"seed{seed}_beta{beta:g}"
    title = rf"seed {seed}, $\beta = {beta:g}$"
    nb.show_grids(nb.traversal_panels(model), f"{title}: traversals",
                  f"{name}_traversals", 2.8, xticks=nb.TICKS,
                  yticks=range(nb.N_CLASSES), ylabel="label", dpi=GRID_DPI)
    panel = (nb.manifold_images(model, 0, nb.STEPS), len(nb.STEPS), f'{title}: label "0"')
    nb.show_grids([panel], None, f"{name}_manifold", 2.9, xticks=nb.TICKS,
                  yticks=nb.TICKS[::-1], xlabel="$z_0$", ylabel="$z_1$", dpi=GRID_DPI)
    nb.plt.close("all")


def quadrature_check(nb, model, x, y, grid_n, ctx):
    """Mean and largest |change| of -log p(x|y) per image when the notebook's spacing is
    halved (2 grid_n - 1 nodes), on the images x."""
    own = torch.arange(len(y)), y
    coarse = nb.quadrature(model, x, grid_n, ctx=ctx)[own]
    fine = nb.quadrature(model, x, 2 * grid_n - 1, ctx=ctx)[own]
    change = (coarse - fine).abs()
    return {"mean |change|": change.mean().item(), "max |change|": change.max().item()}


def summarise(nb, out):
    """Per beta and measure, the values of the seeds in order (the notebook's table)."""
    measures = {}
    for beta in out["settings"]["betas"]:
        runs = [out["runs"][str(s)][nb.tag(beta)] for s in out["seeds"]
                if nb.tag(beta) in out["runs"].get(str(s), {})]
        names = runs[0]["measures"] if runs else {}
        measures[nb.tag(beta)] = {n: [r["measures"][n] for r in runs] for n in names}
    return measures


def main():
    params = notebook_parameters()
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", type=int, default=5, help="seeds per beta")
    parser.add_argument("--epochs", type=int, default=params["EPOCHS"])
    parser.add_argument("--n-train", type=int, default=None, help="default: all")
    parser.add_argument("--n-test", type=int, default=None, help="default: all")
    parser.add_argument("--grid", type=int, default=params["GRID_N"],
                        help="quadrature nodes per axis")
    parser.add_argument("--subset", type=int, default=params["SUBSET"],
                        help="test images for the Jacobians")
    parser.add_argument("--out", type=Path, default=ROOT / "figures" / "seeds.json")
    parser.add_argument("--grids", type=Path, default=ROOT / "figures" / "seeds",
                        help="folder of the per-seed traversal and manifold PNGs")
    parser.add_argument("--ckpt-dir", type=Path, default=ROOT / "checkpoints")
    parser.add_argument("--data-root", type=Path, default=None, help="default: found")
    args = parser.parse_args()

    nb = load_notebook_defs()
    nb.FIG_DIR = args.grids  # where the notebook's save_fig writes
    device = torch.device(params["DEVICE"])
    ctx = nb.precision_context(device)
    root = args.data_root or mnist_root()
    train = nb.load_mnist(root, train=True, n=args.n_train, download=False)
    x_test, y_test = nb.load_mnist(root, train=False, n=args.n_test, download=False)
    seeds = [params["SEED"] + i for i in range(args.seeds)]
    settings = dict(betas=list(params["BETAS"]), epochs=args.epochs,
                    warmup_epochs=params["WARMUP_EPOCHS"], batch_size=params["BATCH_SIZE"],
                    lr=params["LR"], n_train=len(train[0]), n_test=len(x_test),
                    grid=args.grid, subset=args.subset, device=device.type,
                    torch=torch.__version__)
    out = {"settings": settings, "seeds": seeds, "machine": cpu_name(), "seconds": 0.0,
           "measures": {}, "runs": {}}
    if args.out.exists():
        saved = json.loads(args.out.read_text())
        if saved["settings"] == settings:  # resume: keep what is measured
            out["seconds"] = saved["seconds"]
            out["runs"] = {s: saved["runs"][s] for s in map(str, seeds) if s in saved["runs"]}
    start = time.perf_counter()
    seconds = out["seconds"]
    judge = nb.train_judge(*train, device, seed=params["SEED"], ctx=ctx)  # as the notebook
    factors = nb.factor_reference(x_test, y_test)
    for seed in seeds:
        runs = out["runs"].setdefault(str(seed), {})
        for beta in params["BETAS"]:
            if nb.tag(beta) in runs:
                print(f"seed {seed}, {nb.tag(beta)}: in {args.out.name} already", flush=True)
                continue
            model, history = nb.fit(
                beta, train, (x_test, y_test), epochs=args.epochs,
                warmup_epochs=params["WARMUP_EPOCHS"], batch_size=params["BATCH_SIZE"],
                lr=params["LR"], seed=seed, device=device, ctx=ctx, ckpt_dir=args.ckpt_dir,
                log=partial(print, flush=True))
            measures = nb.measure(model, x_test, y_test, judge=judge, factors=factors,
                                  seed=seed, grid_n=args.grid, subset=args.subset, ctx=ctx)
            draw_grids(nb, model, seed, beta)
            runs[nb.tag(beta)] = {"measures": measures, "history": history,
                                  "training minutes": sum(r["seconds"] for r in history) / 60,
                                  "quadrature check": quadrature_check(
                                      nb, model, x_test[:args.subset], y_test[:args.subset],
                                      args.grid, ctx)}
            out["measures"] = summarise(nb, out)
            out["seconds"] = seconds + time.perf_counter() - start
            args.out.parent.mkdir(parents=True, exist_ok=True)
            args.out.with_suffix(".tmp").write_text(json.dumps(out, indent=1))
            os.replace(args.out.with_suffix(".tmp"), args.out)  # atomic
            print(f"seed {seed}, {nb.tag(beta)}: measured, {args.out} written", flush=True)


if __name__ == "__main__":
    main()
