"""make seeds (scripts/seeds.py): a tiny configuration end to end, its resume,
and the committed replication (figures/seeds.json, figures/seed_traversals.pt,
the README's table)."""
import json
import re
import subprocess
import sys
from types import SimpleNamespace

import pytest
import torch

from nbdefs import ROOT, mnist_root

SCRIPT = ROOT / "scripts" / "seeds.py"
COMMITTED = ROOT / "figures" / "seeds.json"
TRAVERSALS = ROOT / "figures" / "seed_traversals.pt"


def run_seeds(tmp_path):
    done = subprocess.run(
        [sys.executable, str(SCRIPT), "--seeds", "2", "--n-train", "512",
         "--n-test", "300", "--epochs", "1", "--quad-step", "1.0",
         "--check-images", "40", "--out", str(tmp_path / "seeds.json"),
         "--traversals", str(tmp_path / "traversals.pt"),
         "--ckpt-dir", str(tmp_path / "checkpoints"),
         "--data-root", str(mnist_root())],
        capture_output=True, text=True, timeout=900, cwd=tmp_path)
    assert done.returncode == 0, done.stderr[-3000:]
    return done.stdout


def check_schema(nb, out):
    """Runs per seed and beta (history, measures by name), the chance values,
    and the summary the notebook reads: per beta and measure, the seeds'
    values in order."""
    seeds = out["seeds"]
    assert out["machine"] and out["seconds"] > 0
    assert list(out["runs"]) == [str(s) for s in seeds]
    betas = [nb.tag(b) for b in out["settings"]["betas"]]
    assert set(out["chance"]) == set(nb.LABELS)
    for per_seed in out["runs"].values():
        assert list(per_seed) == betas
        for run in per_seed.values():
            assert len(run["history"]) == out["settings"]["epochs"]
            assert run["training_minutes"] > 0
            assert set(run["measures"]) == set(nb.LABELS)  # names, not labels
            assert run["measures"]["elbo_gap"] == pytest.approx(
                run["measures"]["neg_elbo"] - run["measures"]["neg_log_px"],
                abs=1e-3)
            assert list(run["traversal_effects"]) == ["z0", "z1"]
            assert set(run["quadrature_check"]) == {"mean_change", "max_change"}
    checks = [r["quadrature_check"] for per_seed in out["runs"].values()
              for r in per_seed.values()]  # the summary the notebook prints
    assert out["quadrature_check"] == pytest.approx({
        "models": len(checks),
        "mean_change": sum(c["mean_change"] for c in checks) / len(checks),
        "max_change": max(c["max_change"] for c in checks)})
    assert list(out["measures"]) == betas
    for beta in betas:
        for name in nb.LABELS:
            assert out["measures"][beta][name] == [
                out["runs"][str(s)][beta]["measures"][name] for s in seeds]


def check_traversals(nb, saved, out):
    """The traversals of every digit along both axes, for every model."""
    assert saved["seeds"] == out["seeds"]
    assert saved["betas"] == out["settings"]["betas"]
    images = saved["images"]
    assert images.dtype == torch.uint8
    assert images.shape == (len(out["seeds"]), len(saved["betas"]),
                            nb.LATENT_DIM, nb.N_CLASSES, len(nb.STEPS), 28, 28)
    assert (images.flatten(2).amax(2) > 0).all()  # every model's were drawn


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    tmp_path = tmp_path_factory.mktemp("seeds")
    first = run_seeds(tmp_path)
    return SimpleNamespace(path=tmp_path, first=first, again=run_seeds(tmp_path))


def test_tiny_replication_end_to_end(nb, tiny):
    out = json.loads((tiny.path / "seeds.json").read_text())
    check_schema(nb, out)
    saved = torch.load(tiny.path / "traversals.pt", weights_only=True)
    check_traversals(nb, saved, out)
    assert out["seeds"] == [8851, 8852] and out["settings"]["betas"] == [1.0, 4.0]
    assert "seed 8852, beta=4: measured" in tiny.first
    assert "epoch 1 of 1 trained" in tiny.first
    assert len(list((tiny.path / "checkpoints").glob("*.pt"))) == 4
    assert "| -log p(x\\|y) |" in tiny.first  # the README's table, escaped


def test_a_second_run_skips_what_is_measured(tiny):
    assert tiny.again.count("already") == 4 and "trained" not in tiny.again


@pytest.fixture(scope="module")
def committed():
    return json.loads(COMMITTED.read_text())


def test_committed_replication_is_of_the_full_configuration(nb, committed):
    check_schema(nb, committed)
    assert committed["seeds"] == [8851, 8852, 8853, 8854, 8855]  # SEED first
    settings = committed["settings"]
    assert (settings["epochs"], settings["n_train"], settings["n_test"]) == (
        20, 60000, 10000)
    assert settings["quad_step"] == 0.1
    for per_seed in committed["runs"].values():
        for run in per_seed.values():  # trained models: the ELBO lies below
            assert run["measures"]["elbo_gap"] > 0
    check_traversals(nb, torch.load(TRAVERSALS, weights_only=True), committed)


def test_the_readmes_table_is_the_committed_replication(nb, committed):
    """Each row of the README's five-seed table: the mean and range per beta,
    the chance value and the count, as figures/seeds.json has them."""
    readme = (ROOT / "README.md").read_text()
    for name, label in nb.LABELS.items():
        series = [committed["measures"][tag][name] for tag in ("beta=1", "beta=4")]
        cells = [f"{nb.fmt(sum(v) / len(v))} [{nb.fmt(min(v))}, "
                 f"{nb.fmt(max(v))}]" for v in series]
        larger = sum(b > a for a, b in zip(*series))
        row = (f"| {label.replace('|', chr(92) + '|')} | {cells[0]} | {cells[1]} | "
               f"{nb.fmt(committed['chance'][name])} | {larger} of 5 |")
        assert row in readme, row


def test_measures_are_keyed_by_name_and_labelled_only_at_the_page(nb, committed):
    """Renaming a label changes LABELS, never the committed data: every key
    is a snake_case name."""
    names = set(committed["chance"])
    for per_seed in committed["runs"].values():
        for run in per_seed.values():
            names |= set(run["measures"]) | set(run["quadrature_check"])
    assert all(re.fullmatch(r"[a-z][a-z0-9_]*", name) for name in names), names
