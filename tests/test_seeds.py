"""make seeds (scripts/seeds.py): a tiny configuration end to end, its resume, and the
schema of the committed figures/seeds.json."""
import json
import subprocess
import sys

import pytest

from conftest import ROOT, mnist_root

SCRIPT = ROOT / "scripts" / "seeds.py"
COMMITTED = ROOT / "figures" / "seeds.json"
VALUES = ["val - train loss, last epoch", "test -ELBO", "-log p(x|y)", "ELBO gap",
          "KL, both axes", "mean sigma, both axes", "active units", "argmax log p(x|y) (%)",
          "judge on samples (%)", "15-NN vote (%)", "15-NN, shuffled labels (%)",
          "code alignment score", "traversal alignment score", "slant: stronger axis",
          "thickness: stronger axis", "width: stronger axis", "height: stronger axis",
          "area: stronger axis"]


def run_seeds(tmp_path):
    done = subprocess.run(
        [sys.executable, str(SCRIPT), "--seeds", "2", "--n-train", "512", "--n-test", "300",
         "--epochs", "1", "--grid", "13", "--out", str(tmp_path / "seeds.json"),
         "--ckpt-dir", str(tmp_path / "checkpoints"), "--data-root", str(mnist_root())],
        capture_output=True, text=True, timeout=900)
    assert done.returncode == 0, done.stderr[-3000:]
    return done.stdout


def check_schema(out, n_seeds):
    assert len(out["seeds"]) == n_seeds and out["settings"]["betas"] == [1.0, 4.0]
    assert out["machine"] and out["seconds"] > 0
    assert list(out["runs"]) == [str(s) for s in out["seeds"]]
    for per_seed in out["runs"].values():
        assert list(per_seed) == ["beta=1", "beta=4"]
        for run in per_seed.values():
            assert list(run["values"]) == VALUES
            values = run["values"]
            assert values["ELBO gap"] == pytest.approx(
                values["test -ELBO"] - values["-log p(x|y)"], abs=1e-3)
            assert len(run["code"]["KL"]) == 2 and run["training minutes"] > 0
            effects = run["traversal effects"]
            assert (len(effects), len(effects[0]), len(effects[0][0])) == (2, 10, 5)


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    tmp_path = tmp_path_factory.mktemp("seeds")
    first = run_seeds(tmp_path)
    return tmp_path, first, run_seeds(tmp_path)


def test_tiny_replication_end_to_end(tiny):
    tmp_path, log, _ = tiny
    out = json.loads((tmp_path / "seeds.json").read_text())
    check_schema(out, 2)
    assert out["seeds"] == [8851, 8852]
    assert "seed 8852, beta=4: measured" in log and "epoch 1 of 1 trained" in log
    assert len(list((tmp_path / "checkpoints").glob("*.pt"))) == 4


def test_a_second_run_skips_what_is_measured(tiny):
    _, _, again = tiny
    assert again.count("already") == 4 and "trained" not in again


def test_committed_replication_is_of_the_full_configuration():
    out = json.loads(COMMITTED.read_text())
    check_schema(out, len(out["seeds"]))
    assert out["seeds"] == [8851, 8852, 8853]  # three seeds per beta, SEED first
    settings = out["settings"]
    assert (settings["epochs"], settings["n_train"], settings["n_test"]) == (20, 60000, 10000)
    for per_seed in out["runs"].values():
        for run in per_seed.values():  # trained models: the ELBO lies below log p
            assert run["values"]["ELBO gap"] > 0 and run["values"]["active units"] == 2
