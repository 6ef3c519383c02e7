"""make seeds (scripts/seeds.py): a tiny configuration end to end, its resume, and the
committed figures/seeds.json."""
import json
import subprocess
import sys
from types import SimpleNamespace

import pytest

from nbdefs import ROOT, mnist_root

SCRIPT = ROOT / "scripts" / "seeds.py"
COMMITTED = ROOT / "figures" / "seeds.json"


def run_seeds(tmp_path):
    done = subprocess.run(
        [sys.executable, str(SCRIPT), "--seeds", "2", "--n-train", "512", "--n-test", "300",
         "--epochs", "1", "--grid", "13", "--subset", "40",
         "--out", str(tmp_path / "seeds.json"), "--grids", str(tmp_path / "grids"),
         "--ckpt-dir", str(tmp_path / "checkpoints"), "--data-root", str(mnist_root())],
        capture_output=True, text=True, timeout=900, cwd=tmp_path)
    assert done.returncode == 0, done.stderr[-3000:]
    return done.stdout


def check_schema(out):
    """Runs per seed and beta (history, measures), and the summary the notebook reads:
    per beta and measure, the seeds' values in order."""
    seeds = out["seeds"]
    assert out["machine"] and out["seconds"] > 0
    assert list(out["runs"]) == [str(s) for s in seeds]
    betas = [f"beta={b:g}" for b in out["settings"]["betas"]]
    for per_seed in out["runs"].values():
        assert list(per_seed) == betas
        for run in per_seed.values():
            assert len(run["history"]) == out["settings"]["epochs"]
            assert run["training minutes"] > 0
            measures = run["measures"]
            assert measures["ELBO gap"] == pytest.approx(
                measures["-ELBO"] - measures["-log p(x|y)"], abs=1e-3)
    assert list(out["measures"]) == betas
    for beta in betas:
        names = list(out["runs"][str(seeds[0])][beta]["measures"])
        assert list(out["measures"][beta]) == names
        for name in names:
            assert out["measures"][beta][name] == [
                out["runs"][str(s)][beta]["measures"][name] for s in seeds]


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    tmp_path = tmp_path_factory.mktemp("seeds")
    first = run_seeds(tmp_path)
    return SimpleNamespace(path=tmp_path, first=first, again=run_seeds(tmp_path))


def test_tiny_replication_end_to_end(tiny):
    out = json.loads((tiny.path / "seeds.json").read_text())
    check_schema(out)
    assert out["seeds"] == [8851, 8852] and out["settings"]["betas"] == [1.0, 4.0]
    assert "seed 8852, beta=4: measured" in tiny.first
    assert "epoch 1 of 1 trained" in tiny.first
    assert len(list((tiny.path / "checkpoints").glob("*.pt"))) == 4
    grids = sorted(p.name for p in (tiny.path / "grids").glob("*.png"))
    assert grids == [f"seed{s}_beta{b}_{kind}.png" for s in (8851, 8852) for b in (1, 4)
                     for kind in ("manifold", "traversals")]


def test_a_second_run_skips_what_is_measured(tiny):
    assert tiny.again.count("already") == 4 and "trained" not in tiny.again


def test_committed_replication_is_of_the_full_configuration_and_current_measures(tiny):
    out = json.loads(COMMITTED.read_text())
    check_schema(out)
    assert out["seeds"] == [8851, 8852, 8853, 8854, 8855]  # five seeds per beta, SEED first
    settings = out["settings"]
    assert (settings["epochs"], settings["n_train"], settings["n_test"]) == (20, 60000, 10000)
    current = json.loads((tiny.path / "seeds.json").read_text())["measures"]["beta=1"]
    assert list(out["measures"]["beta=1"]) == list(current)  # made by today's measure()
    for per_seed in out["runs"].values():
        for run in per_seed.values():  # trained models: the ELBO lies below log p
            assert run["measures"]["ELBO gap"] > 0
    for seed in out["seeds"]:
        for beta in (1, 4):
            for kind in ("manifold", "traversals"):
                assert (ROOT / "figures" / "seeds" / f"seed{seed}_beta{beta}_{kind}.png").exists()
