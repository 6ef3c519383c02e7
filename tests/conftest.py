"""Shared fixtures and helpers: the notebook's own definitions (cells tagged "defs"), its
parameters cell, MNIST, and `fit` with small settings."""
import os
from pathlib import Path

import pytest
import torch

from nbdefs import NOTEBOOK, ROOT, load_notebook_defs, notebook_parameters  # noqa: F401

CPU = torch.device("cpu")


def mnist_root():
    """MNIST_ROOT if set, else the project's data/, else ../shared/data beside the repo."""
    if os.environ.get("MNIST_ROOT"):
        return Path(os.environ["MNIST_ROOT"]).resolve()
    for root in (ROOT / "data", ROOT.parent / "shared" / "data"):
        if (root / "MNIST" / "raw" / "t10k-labels-idx1-ubyte").exists():
            return root
    pytest.fail("MNIST not found: set MNIST_ROOT to a folder holding MNIST/raw/")



def quiet(_):
    pass


def small_fit(nb, beta, data, ckpt_dir, **settings):
    """The notebook's fit with small settings (one epoch); `settings` override them."""
    kwargs = dict(epochs=1, warmup_epochs=8, batch_size=128, lr=3e-4, seed=0, device=CPU,
                  ckpt_dir=ckpt_dir, log=quiet)
    kwargs.update(settings)
    return nb.fit(beta, data, **kwargs)


@pytest.fixture(scope="session")
def nb():
    return load_notebook_defs()


@pytest.fixture(scope="session")
def mnist(nb):
    """The real MNIST tensors, through the notebook's loader (no download attempted)."""
    return nb.load_mnist(mnist_root(), download=False)


@pytest.fixture(scope="session")
def small_data(mnist):
    (x_tr, y_tr), (x_te, y_te) = mnist
    return (x_tr[:512], y_tr[:512]), (x_te[:256], y_te[:256])
