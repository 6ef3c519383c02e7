"""Checkpoints, exact resume, and a clear error for every bad input (faults injected)."""
import pytest
import torch
from torchvision import datasets

CPU = torch.device("cpu")


def quiet(_):
    pass


def same_weights(a, b):
    return all(torch.equal(p, q) for p, q in zip(a.state_dict().values(),
                                                 b.state_dict().values()))


def test_interrupted_run_resumes_to_the_same_weights(nb, small_data, tmp_path, monkeypatch):
    cfg = nb.Config(epochs=3, warmup_epochs=2, batch_size=64, seed=3)
    straight, h_straight = nb.fit(1.0, small_data, cfg, CPU, ckpt_dir=tmp_path / "a",
                                  log=quiet)
    calls, real_loss = [0], nb.vae_loss
    def interrupting_loss(*args, **kwargs):  # dies in epoch 2, after 3 of its steps
        calls[0] += 1
        if calls[0] == 8 + 3 + 1:
            raise KeyboardInterrupt
        return real_loss(*args, **kwargs)
    monkeypatch.setattr(nb, "vae_loss", interrupting_loss)
    with pytest.raises(KeyboardInterrupt):
        nb.fit(1.0, small_data, cfg, CPU, ckpt_dir=tmp_path / "b", log=quiet)
    monkeypatch.setattr(nb, "vae_loss", real_loss)
    logs = []
    resumed, h_resumed = nb.fit(1.0, small_data, cfg, CPU, ckpt_dir=tmp_path / "b",
                                log=logs.append)
    assert "resuming after epoch 1" in logs[0]
    assert same_weights(straight, resumed)  # bit-exact on the CPU
    assert h_resumed["val_loss"] == h_straight["val_loss"]


def test_finished_checkpoint_skips_training(nb, small_data, tmp_path, monkeypatch):
    cfg = nb.Config(epochs=1, seed=4)
    first, h1 = nb.fit(4.0, small_data, cfg, CPU, ckpt_dir=tmp_path, log=quiet)
    def no_training(*args, **kwargs):
        raise AssertionError("trained although a finished checkpoint exists")
    monkeypatch.setattr(nb, "train_epoch", no_training)
    logs = []
    second, h2 = nb.fit(4.0, small_data, cfg, CPU, ckpt_dir=tmp_path, log=logs.append)
    assert "training skipped" in logs[0] and h1 == h2 and same_weights(first, second)
    with pytest.raises(AssertionError, match="trained although"):
        nb.fit(4.0, small_data, cfg, CPU, ckpt_dir=tmp_path, retrain=True, log=quiet)


@pytest.mark.parametrize("damage", ["truncated", "garbage", "empty"])
def test_damaged_checkpoint_is_reported_and_retrained(nb, small_data, tmp_path, damage):
    cfg = nb.Config(epochs=1, seed=5)
    _, h1 = nb.fit(1.0, small_data, cfg, CPU, ckpt_dir=tmp_path, log=quiet)
    (path,) = tmp_path.glob("*.pt")
    data = path.read_bytes()
    path.write_bytes({"truncated": data[: len(data) // 2], "garbage": b"\x00junk" * 99,
                      "empty": b""}[damage])
    logs = []
    _, h2 = nb.fit(1.0, small_data, cfg, CPU, ckpt_dir=tmp_path, log=logs.append)
    assert "unreadable" in logs[0] and "training from scratch" in logs[0]
    assert h2["val_loss"] == h1["val_loss"]  # retrained, same seed: same result
    assert nb.load_checkpoint(path, nb.run_key(1.0, cfg, CPU, nb.amp_dtype_for(CPU)))


def test_checkpoint_of_another_configuration_is_not_used(nb, small_data, tmp_path):
    cfg_a, cfg_b = nb.Config(epochs=1, seed=5), nb.Config(epochs=1, seed=6)
    nb.fit(1.0, small_data, cfg_a, CPU, ckpt_dir=tmp_path / "a", log=quiet)
    key_b = nb.run_key(1.0, cfg_b, CPU, nb.amp_dtype_for(CPU))
    (path_a,) = (tmp_path / "a").glob("*.pt")
    (tmp_path / "b").mkdir()
    (tmp_path / "b" / f"cvae_beta1_{key_b}.pt").write_bytes(path_a.read_bytes())
    logs = []
    nb.fit(1.0, small_data, cfg_b, CPU, ckpt_dir=tmp_path / "b", log=logs.append)
    assert "another configuration" in logs[0]


@pytest.mark.parametrize("kwargs, message", [
    (dict(epochs=0), "epochs"), (dict(warmup_epochs=-1), "warmup_epochs"),
    (dict(batch_size=0), "batch_size"), (dict(lr=0.0), "lr"), (dict(lr=-1e-3), "lr"),
    (dict(precision="fp8"), "precision"),
])
def test_bad_parameters_are_refused_with_a_clear_message(nb, kwargs, message):
    with pytest.raises(ValueError, match=message):
        nb.Config(**kwargs)


def test_negative_beta_is_refused_before_any_work(nb, small_data, tmp_path):
    with pytest.raises(ValueError, match="beta must be >= 0"):
        nb.fit(-1.0, small_data, nb.Config(epochs=1), CPU, ckpt_dir=tmp_path)
    assert not any(tmp_path.iterdir())


@pytest.mark.parametrize("name", ["tpu", "gpu", "banana", "meta"])
def test_unknown_device_is_refused(nb, name):
    with pytest.raises(ValueError, match="device"):
        nb.resolve_device(name)


def test_nan_stops_training_and_keeps_the_last_good_checkpoint(nb, small_data, tmp_path,
                                                              monkeypatch):
    cfg = nb.Config(epochs=3, batch_size=128, seed=6)
    calls, real_recon = [0], nb.recon_loss
    def poisoned_recon(logits, x):
        calls[0] += 1
        out = real_recon(logits, x)
        return out * float("nan") if calls[0] == 4 + 1 + 2 else out  # epoch 2, step 2
    monkeypatch.setattr(nb, "recon_loss", poisoned_recon)
    with pytest.raises(FloatingPointError, match=r"beta=1, epoch 2, step 2"):
        nb.fit(1.0, small_data, cfg, CPU, ckpt_dir=tmp_path, log=quiet)
    (path,) = tmp_path.glob("*.pt")
    state = nb.load_checkpoint(path, nb.run_key(1.0, cfg, CPU, nb.amp_dtype_for(CPU)))
    assert state["epoch"] == 1 and all(torch.isfinite(v).all()
                                       for v in state["model"].values())


def test_missing_data_offline_gives_a_clear_message(nb, tmp_path, monkeypatch):
    monkeypatch.setattr(datasets.MNIST, "mirrors", ["http://127.0.0.1:9/"])  # refused
    with pytest.raises(RuntimeError) as err:
        nb.load_mnist(tmp_path / "nowhere")
    text = str(err.value)
    assert "MNIST/raw" in text and "t10k-images-idx3-ubyte" in text and "MNIST_ROOT" in text
