"""Shared fixtures: the notebook's own definitions (cells tagged "defs"), and MNIST."""
import os
from pathlib import Path

import pytest

from nbdefs import NOTEBOOK, ROOT, load_notebook_defs  # noqa: F401 (re-exported)


def mnist_root():
    """MNIST_ROOT if set, else the project's data/, else ../shared/data beside the repo."""
    if os.environ.get("MNIST_ROOT"):
        return Path(os.environ["MNIST_ROOT"]).resolve()
    for root in (ROOT / "data", ROOT.parent / "shared" / "data"):
        if (root / "MNIST" / "raw" / "t10k-labels-idx1-ubyte").exists():
            return root
    pytest.fail("MNIST not found: set MNIST_ROOT to a folder holding MNIST/raw/")


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
