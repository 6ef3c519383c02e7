"""Fixtures: the notebook's own definitions (its cells tagged "defs"), MNIST
read through the notebook's loader, and the notebook's fit with small
settings."""
from contextlib import nullcontext

import pytest
import torch

from nbdefs import load_notebook_defs, mnist_root

CPU = torch.device("cpu")


def quiet(message):  # a log that keeps the test output clean
    pass


def small_fit(nb, beta, data, ckpt_dir, **settings):
    """The notebook's fit on data = (train, val), in fp32, one epoch unless
    `settings` say otherwise."""
    kwargs = dict(epochs=1, warmup_epochs=8, batch_size=128, lr=3e-4, seed=0,
                  device=CPU, precision=nb.Precision(torch.float32,
                                                     nullcontext()),
                  ckpt_dir=ckpt_dir, log=quiet)
    kwargs.update(settings)
    return nb.fit(beta, data[0], data[1], **kwargs)


def column(history, key):  # one quantity over the epochs of a fit's history
    return [record[key] for record in history]


@pytest.fixture(scope="session")
def nb():
    return load_notebook_defs()


@pytest.fixture(scope="session")
def mnist(nb):
    """{"train": (x, y), "test": (x, y)}: the real MNIST, no download."""
    root = mnist_root()
    return {"train": nb.load_mnist(root, train=True, download=False),
            "test": nb.load_mnist(root, train=False, download=False)}


@pytest.fixture(scope="session")
def small_data(mnist):
    """512 training and 256 validation images."""
    x, y = mnist["train"]
    x_val, y_val = mnist["test"]
    return (x[:512], y[:512]), (x_val[:256], y_val[:256])
