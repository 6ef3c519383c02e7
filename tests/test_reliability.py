"""Checkpoints, exact resume, and a clear error for every bad input (faults injected)."""
import pytest
import torch
from torchvision import datasets

from conftest import column, small_fit
from nbdefs import mnist_root


def same_weights(a, b):
    return all(torch.equal(p, q) for p, q in zip(a.state_dict().values(),
                                                 b.state_dict().values()))


def training_calls(nb, monkeypatch, on_call):
    """Run on_call(n) before the n-th training step (validation calls do not count)."""
    calls = [0]
    elbo_terms = nb.elbo_terms

    def counting(model, *args, **kwargs):
        if model.training:
            calls[0] += 1
            on_call(calls[0])
        return elbo_terms(model, *args, **kwargs)
    monkeypatch.setattr(nb, "elbo_terms", counting)


def test_interrupted_run_resumes_to_the_same_weights(nb, small_data, tmp_path, monkeypatch):
    settings = dict(epochs=3, warmup_epochs=2, batch_size=64, seed=3)
    straight, h_straight = small_fit(nb, 1.0, small_data, tmp_path / "a", **settings)

    def interrupt(n):  # 8 steps per epoch: dies during epoch 2
        if n == 8 + 3:
            raise KeyboardInterrupt
    with monkeypatch.context() as m:
        training_calls(nb, m, interrupt)
        with pytest.raises(KeyboardInterrupt):
            small_fit(nb, 1.0, small_data, tmp_path / "b", **settings)
    (path,) = (tmp_path / "b").glob("*.pt")
    assert len(torch.load(path, weights_only=True)["history"]) == 1
    logs = []
    resumed, h_resumed = small_fit(nb, 1.0, small_data, tmp_path / "b", log=logs.append,
                                   **settings)
    assert [m for m in logs if "trained" in m] == [
        "beta=1, seed 3: epoch 2 of 3 trained", "beta=1, seed 3: epoch 3 of 3 trained"]
    assert same_weights(straight, resumed)  # bit-exact on the CPU
    assert column(h_resumed, "val_loss") == column(h_straight, "val_loss")


def test_finished_checkpoint_is_reused_and_retrain_trains_again(nb, small_data, tmp_path,
                                                                monkeypatch):
    first, h1 = small_fit(nb, 4.0, small_data, tmp_path, seed=4)

    def no_training(*args, **kwargs):
        raise AssertionError("trained although a finished checkpoint exists")
    monkeypatch.setattr(nb, "train_epoch", no_training)
    logs = []
    second, h2 = small_fit(nb, 4.0, small_data, tmp_path, seed=4, log=logs.append)
    assert h1 == h2 and same_weights(first, second)
    assert logs == [f"beta=4: 1 epochs, {h1[0]['seconds'] / 60:.1f} min of training, "
                    f"last validation loss {h1[0]['val_loss']:.2f}"]
    with pytest.raises(AssertionError, match="trained although"):
        small_fit(nb, 4.0, small_data, tmp_path, seed=4, retrain=True)


@pytest.mark.parametrize("damage", ["truncated", "garbage", "empty"])
def test_damaged_checkpoint_is_reported_and_retrained(nb, small_data, tmp_path, damage):
    _, h1 = small_fit(nb, 1.0, small_data, tmp_path, seed=5)
    (path,) = tmp_path.glob("*.pt")
    data = path.read_bytes()
    damaged = {"truncated": data[: len(data) // 2], "garbage": b"\x00junk" * 99, "empty": b""}
    path.write_bytes(damaged[damage])
    with pytest.warns(UserWarning, match="unusable.*training anew"):
        _, h2 = small_fit(nb, 1.0, small_data, tmp_path, seed=5)
    assert column(h2, "val_loss") == column(h1, "val_loss")  # retrained, same result
    assert len(torch.load(path, weights_only=True)["history"]) == 1  # and saved again


def test_checkpoint_of_another_configuration_is_not_used(nb, small_data, tmp_path):
    small_fit(nb, 1.0, small_data, tmp_path / "a", seed=5)
    _, h6 = small_fit(nb, 1.0, small_data, tmp_path / "b", seed=6)
    (path_a,) = (tmp_path / "a").glob("*.pt")
    (path_b,) = (tmp_path / "b").glob("*.pt")
    path_b.write_bytes(path_a.read_bytes())  # seed 5's file under seed 6's name
    with pytest.warns(UserWarning, match="another configuration"):
        _, again = small_fit(nb, 1.0, small_data, tmp_path / "b", seed=6)
    assert column(again, "val_loss") == column(h6, "val_loss")  # seed 6's, trained anew


def test_nan_stops_training_naming_model_epoch_step_and_keeps_the_checkpoint(
        nb, small_data, tmp_path, monkeypatch):
    recon_loss = nb.recon_loss

    def nan_loss(*args):
        return recon_loss(*args) * float("nan")

    def poison(n):  # 4 steps of 128 per epoch: epoch 2, step 2
        if n == 4 + 2:
            monkeypatch.setattr(nb, "recon_loss", nan_loss)
    training_calls(nb, monkeypatch, poison)
    with pytest.raises(FloatingPointError, match=r"beta=1, epoch 2, step 2.*checkpoint kept"):
        small_fit(nb, 1.0, small_data, tmp_path, epochs=3, seed=6)
    (path,) = tmp_path.glob("*.pt")
    state = torch.load(path, weights_only=True)
    assert len(state["history"]) == 1
    assert all(torch.isfinite(v).all() for v in state["model"].values())


@pytest.mark.parametrize("change, message", [
    (dict(betas=(1.0, -4.0)), "BETAS"), (dict(epochs=0), "EPOCHS"),
    (dict(epochs=2.5), "EPOCHS"), (dict(warmup_epochs=-1), "WARMUP_EPOCHS"),
    (dict(batch_size=0), "BATCH_SIZE"), (dict(lr=0.0), "LR"), (dict(lr=-1e-3), "LR"),
    (dict(betas=()), "BETAS"), (dict(warmup_epochs=1.5), "WARMUP_EPOCHS"),
])
def test_bad_parameters_are_refused_with_a_clear_message(nb, change, message):
    good = dict(betas=(1.0, 4.0), epochs=20, warmup_epochs=8, batch_size=128, lr=3e-4)
    nb.check_settings(**good)  # the notebook's own values pass
    nb.check_settings(betas=(0.5,), epochs=1, warmup_epochs=0, batch_size=1, lr=1e-5)
    bad = dict(good)
    bad.update(change)
    with pytest.raises(ValueError, match=f"bad parameters; required: {message}"):
        nb.check_settings(**bad)


def test_images_are_floats_in_zero_to_one(mnist):
    x, y = mnist["train"]
    x_test, y_test = mnist["test"]
    assert x.shape == (60000, 1, 28, 28) and x_test.shape == (10000, 1, 28, 28)
    assert x.dtype == torch.float32 and x.min() == 0.0 and x.max() == 1.0
    assert y.tolist()[:5] == [5, 0, 4, 1, 9] and y_test.tolist()[:5] == [7, 2, 1, 0, 4]


def test_load_mnist_takes_the_first_n(nb, mnist):
    x, y = nb.load_mnist(mnist_root(), train=False, n=7, download=False)
    assert torch.equal(x, mnist["test"][0][:7]) and torch.equal(y, mnist["test"][1][:7])


def test_missing_data_offline_gives_a_clear_message(nb, tmp_path, monkeypatch):
    monkeypatch.setattr(datasets.MNIST, "mirrors", ["http://127.0.0.1:9/"])  # refused
    with pytest.raises(RuntimeError) as err:
        nb.load_mnist(tmp_path / "nowhere", train=True)
    text = str(err.value)
    assert "MNIST/raw" in text and "train-images-idx3-ubyte" in text and "DATA_ROOT" in text
    assert not (tmp_path / "nowhere" / "MNIST" / "raw" / "train-images-idx3-ubyte").exists()
