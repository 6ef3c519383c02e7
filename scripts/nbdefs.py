"""The notebook's own code for the tests, `make seeds` and `make bench`: its
cells tagged "defs" loaded as a module, the values of its parameters cell, and
where MNIST lies.

Nothing here copies the notebook: every function the callers use is the
notebook's.
"""
import os
import platform
import sys
import types
from pathlib import Path

import nbformat

ROOT = Path(__file__).resolve().parents[1]
NOTEBOOK = ROOT / "CSC8851_F2025_HW1_Student.ipynb"


def tagged_cells(path, tag):
    cells = nbformat.read(path, as_version=4).cells
    return [c for c in cells if tag in c.metadata.get("tags", [])]


def notebook_parameters(path=NOTEBOOK):
    """The values that the notebook's parameters cell sets."""
    import torch  # the cell's DEVICE line asks for it

    values = {}
    exec(tagged_cells(path, "parameters")[0].source, {"torch": torch}, values)
    return values


def load_notebook_defs(path=NOTEBOOK):
    """Execute the notebook's cells tagged "defs" into a fresh module."""
    module = types.ModuleType("hw1_notebook")
    sys.modules[module.__name__] = module  # pickling looks it up here
    for i, cell in enumerate(tagged_cells(path, "defs")):
        code = compile(cell.source, f"<notebook defs cell {i}>", "exec")
        exec(code, module.__dict__)
    return module


def mnist_root():
    """The folder holding MNIST/raw/: MNIST_ROOT if set, else the project's
    data/, else ../shared/data beside the project. Exits with a message when
    there is none."""
    candidates = [ROOT / "data", ROOT.parent / "shared" / "data"]
    if os.environ.get("MNIST_ROOT"):
        candidates = [Path(os.environ["MNIST_ROOT"])]
    for root in candidates:
        if (root / "MNIST" / "raw" / "t10k-labels-idx1-ubyte").exists():
            return root.resolve()
    sys.exit(f"MNIST not found in {', '.join(map(str, candidates))}: run "
             "'make data' or set MNIST_ROOT to a folder holding MNIST/raw/")


def cpu_name():
    """The CPU model, as /proc/cpuinfo names it (else what platform knows)."""
    info = Path("/proc/cpuinfo")
    if info.exists():
        for line in info.read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    return platform.processor() or platform.machine()
