"""Load the notebook's own definitions (its code cells tagged "defs") as a module, and the
values of its parameters cell.

Tests and the benchmark run this code, never a copy of it.
"""
import sys
import types
from pathlib import Path

import nbformat

ROOT = Path(__file__).resolve().parents[1]
NOTEBOOK = ROOT / "CSC8851_F2025_HW1_Student.ipynb"


def notebook_parameters(path=NOTEBOOK):
    """The values that the notebook's parameters cell (tagged "parameters") sets."""
    import torch  # the cell's DEVICE line asks for it

    cells = nbformat.read(path, as_version=4).cells
    source = next(c.source for c in cells if "parameters" in c.metadata.get("tags", []))
    values = {}
    exec(source, {"torch": torch}, values)
    return values


def load_notebook_defs(path=NOTEBOOK):
    """Execute the notebook's cells tagged 'defs' into a fresh module and return it."""
    module = types.ModuleType("hw1_notebook")
    sys.modules[module.__name__] = module  # dataclasses look their module up here
    cells = nbformat.read(path, as_version=4).cells
    for i, cell in enumerate(cells):
        if cell.cell_type == "code" and "defs" in cell.metadata.get("tags", []):
            exec(compile(cell.source, f"<notebook cell {i}>", "exec"), module.__dict__)
    return module
