"""make seeds: both models for five seeds, measured by the notebook's own code.

Trains beta = 1 and beta = 4 (the notebook's BETAS) for SEED ... SEED + 4 with
the notebook's `fit` and the settings of its parameters cell, reusing its
checkpoints (checkpoints/, named by a hash of the settings: SEED's models are
the notebook's own). Measures each model with the notebook's `measure` and
`traversal_effects`, checks the quadrature at half its spacing, and writes
figures/seeds.json (with the notebook's `chance_values`) and the traversals of
every model (figures/seed_traversals.pt, uint8) after every model. Interrupted,
it resumes: models in the file (same settings) are skipped, an interrupted
training continues from its last epoch. At the end it prints the README's table.

    python scripts/seeds.py              # the full replication (make seeds)
    python scripts/seeds.py --seeds 2 --n-train 512 --n-test 256 --epochs 1 \\
        --out x.json --traversals x.pt
"""
import argparse
import json
import time
from functools import partial
from pathlib import Path
from types import SimpleNamespace

import torch

from nbdefs import (ROOT, cpu_name, load_notebook_defs, mnist_root,
                    notebook_parameters)

FIGURES = ROOT / "figures"


def arguments(params):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    add = parser.add_argument
    add("--seeds", type=int, default=5, help="seeds per beta")
    add("--epochs", type=int, default=params["EPOCHS"])
    add("--n-train", type=int, default=None, help="default: all")
    add("--n-test", type=int, default=None, help="default: all")
    add("--quad-step", type=float, default=params["QUAD_STEP"])
    add("--check-images", type=int, default=200,
        help="test images for the quadrature check")
    add("--out", type=Path, default=FIGURES / "seeds.json")
    add("--traversals", type=Path, default=FIGURES / "seed_traversals.pt")
    add("--ckpt-dir", type=Path, default=ROOT / "checkpoints")
    add("--data-root", type=Path, default=None, help="default: found")
    return parser.parse_args()


def shared(nb, params, args):
    """What every model of the replication uses: data, factors, settings."""
    device = torch.device(params["DEVICE"])
    root = args.data_root or mnist_root()
    train = nb.load_mnist(root, train=True, n=args.n_train, download=False)
    x, y = nb.load_mnist(root, train=False, n=args.n_test, download=False)
    test_factors = nb.factor_table(x)
    settings = dict(
        betas=list(params["BETAS"]), epochs=args.epochs,
        warmup_epochs=params["WARMUP_EPOCHS"],
        batch_size=params["BATCH_SIZE"], lr=params["LR"],
        n_train=len(train[0]), n_test=len(x), quad_step=args.quad_step,
        device=device.type, torch=torch.__version__)
    return SimpleNamespace(
        nb=nb, params=params, args=args, device=device, train=train,
        test=(x, y), precision=nb.precision_context(device),
        factors=nb.within_digit(test_factors, y),
        digit_sd=nb.digit_stats(test_factors, y)[1], settings=settings,
        seeds=[params["SEED"] + i for i in range(args.seeds)])


def quadrature_check(nb, model, x, y, step):
    """Mean and largest |change| of -log p(x|y) per image at half the step."""
    own = torch.arange(len(y)), y
    change = (nb.quadrature(model, x, step)[own]
              - nb.quadrature(model, x, step / 2)[own]).abs()
    return {"mean_change": change.mean().item(),
            "max_change": change.max().item()}


def replicate(run, seed, beta):
    """Train (or reuse) one model and measure it: its record, traversals."""
    nb, params, args = run.nb, run.params, run.args
    model, history = nb.fit(
        beta, run.train, run.test, epochs=args.epochs,
        warmup_epochs=params["WARMUP_EPOCHS"],
        batch_size=params["BATCH_SIZE"], lr=params["LR"], seed=seed,
        device=run.device, precision=run.precision, ckpt_dir=args.ckpt_dir,
        log=partial(print, flush=True))
    x, y = run.test
    n = args.check_images
    effects = nb.traversal_effects(model, run.digit_sd)
    record = {
        "measures": nb.measure(model, x, y, factors=run.factors, seed=seed,
                               quad_step=args.quad_step),
        "history": history,
        "training_minutes": sum(r["seconds"] for r in history) / 60,
        "quadrature_check": quadrature_check(nb, model, x[:n], y[:n],
                                             args.quad_step),
        "traversal_effects": {f"z{axis}": effect._asdict()
                              for axis, effect in enumerate(effects)}}
    sweeps = torch.stack([nb.traversal_images(model, axis, nb.STEPS)
                          for axis in range(nb.LATENT_DIM)])
    grey = (sweeps * 255).round().to(torch.uint8)
    return record, grey.view(nb.LATENT_DIM, nb.N_CLASSES, len(nb.STEPS), 28, 28)


def previous(run):
    """What an earlier run of the same settings measured: (out, images)."""
    betas = run.settings["betas"]
    out = {"settings": run.settings, "seeds": run.seeds,
           "machine": cpu_name(), "seconds": 0.0, "measures": {},
           "chance": {}, "runs": {}}
    images = torch.zeros(len(run.seeds), len(betas), run.nb.LATENT_DIM,
                         run.nb.N_CLASSES, len(run.nb.STEPS), 28, 28,
                         dtype=torch.uint8)
    if run.args.out.exists() and run.args.traversals.exists():
        saved = json.loads(run.args.out.read_text())
        kept = torch.load(run.args.traversals, weights_only=True)
        same = (saved["settings"] == run.settings
                and kept["seeds"] == run.seeds and kept["betas"] == betas)
        if same:  # resume: keep what is measured
            out["seconds"] = saved["seconds"]
            out["runs"] = saved["runs"]
            images = kept["images"]
    return out, images


def summarise(out):
    """Per beta and measure, the values of the seeds in order."""
    measures = {}
    for tag in out["runs"][str(out["seeds"][0])]:
        runs = [out["runs"][str(s)][tag] for s in out["seeds"]
                if tag in out["runs"].get(str(s), {})]
        names = runs[0]["measures"]
        measures[tag] = {n: [r["measures"][n] for r in runs] for n in names}
    return measures


def quadrature_summary(out):
    """Over all models: the mean of their mean changes, the largest one."""
    checks = [r["quadrature_check"] for runs in out["runs"].values()
              for r in runs.values()]
    return {"models": len(checks),
            "mean_change": sum(c["mean_change"] for c in checks) / len(checks),
            "max_change": max(c["max_change"] for c in checks)}


def save(run, out, images):
    nb = run.nb
    out["measures"] = summarise(out)
    out["quadrature_check"] = quadrature_summary(out)
    nb.atomic_write(run.args.out, partial(Path.write_text,
                                          data=json.dumps(out, indent=1)))
    payload = {"seeds": run.seeds, "betas": run.settings["betas"],
               "images": images}
    nb.atomic_write(run.args.traversals, partial(torch.save, payload))


def markdown_table(nb, out):
    """The README's table: per measure, mean [least, largest] per beta,
    chance, and in how many seeds the last beta's value is the larger."""
    tags = list(out["measures"])
    lines = ["| measure (test set) | " + " | ".join(
        f"{tag}: mean [range]" for tag in tags) + " | chance | beta=4 larger |",
        "|---" * (len(tags) + 3) + "|"]
    for name, label in nb.LABELS.items():
        series = [out["measures"][tag][name] for tag in tags]
        cells = [f"{nb.fmt(sum(v) / len(v))} [{nb.fmt(min(v))}, "
                 f"{nb.fmt(max(v))}]" for v in series]
        larger = sum(b > a for a, b in zip(series[0], series[-1]))
        label = label.replace("|", "\\|")  # a table cell of Markdown
        lines.append(f"| {label} | " + " | ".join(cells) + f" | "
                     f"{nb.fmt(out['chance'][name])} | "
                     f"{larger} of {len(series[0])} |")
    return "\n".join(lines)


def main():
    params = notebook_parameters()
    run = shared(load_notebook_defs(), params, arguments(params))
    nb, (x, y) = run.nb, run.test
    out, images = previous(run)
    no_code = nb.no_code_nll(*run.train, x, y)
    out["chance"] = nb.chance_values(run.factors, y, no_code=no_code,
                                     seed=params["SEED"])
    start = time.perf_counter()
    seconds = out["seconds"]
    for i, seed in enumerate(run.seeds):
        runs = out["runs"].setdefault(str(seed), {})
        for j, beta in enumerate(params["BETAS"]):
            name = f"seed {seed}, {nb.tag(beta)}"
            if nb.tag(beta) in runs:
                print(f"{name}: in {run.args.out.name} already", flush=True)
                continue
            runs[nb.tag(beta)], images[i, j] = replicate(run, seed, beta)
            out["seconds"] = seconds + time.perf_counter() - start
            save(run, out, images)
            print(f"{name}: measured, {run.args.out} written", flush=True)
    save(run, out, images)
    print(markdown_table(nb, out))


if __name__ == "__main__":
    main()
