"""The notebook as a whole: a small run of a temporary copy (twice: the second must reuse
the checkpoints), its PDF, and the committed deliverable (full run, budgets, and every
number its prose quotes)."""
import json
import re
import shutil
import subprocess
import sys

import nbformat
import pytest
from nbclient import NotebookClient
from nbclient.exceptions import CellExecutionError

from conftest import NOTEBOOK, mnist_root

FIGURES = ["fig1_curves_beta1", "fig2_curves_beta4", "fig3_reconstructions",
           "fig4_generation", "fig5_latent_scatter", "fig6_traversals_beta1",
           "fig7_traversals_beta4", "fig8_fig9_manifolds"]
SMALL = "EPOCHS, N_TRAIN, N_TEST, SUBSET, GRID_N = 2, 2048, 1000, 100, 25"
MAX_CODE_LINE = 80  # longer lines wrap in the PDF
# decimal numbers the prose may quote without an output: the assignment's settings
ALLOWED = {"0.9", "0.95", "0.01", "0.5", "1.0", "0.1", "0.2", "0.4"}


def with_parameters(path, source):
    """Write a copy of the notebook with `source` injected after the parameters cell,
    as papermill does."""
    nb = nbformat.read(NOTEBOOK, as_version=4)
    i = next(i for i, c in enumerate(nb.cells) if "parameters" in c.metadata.get("tags", []))
    cell = nbformat.v4.new_code_cell(
        f'DATA_ROOT, DEVICE = {str(mnist_root())!r}, "cpu"\n{source}')
    cell.metadata["tags"] = ["injected-parameters"]
    nb.cells.insert(i + 1, cell)
    nbformat.write(nb, path)


def execute(path):
    nb = nbformat.read(path, as_version=4)
    NotebookClient(nb, timeout=900, kernel_name="python3",
                   resources={"metadata": {"path": str(path.parent)}}).execute()
    nbformat.write(nb, path)
    return nb


def outputs_text(nb):
    """Every text output: streams, and the text/plain of displays and results."""
    out = []
    for c in nb.cells:
        for o in c.get("outputs", []) if c.cell_type == "code" else []:
            out.append("".join(o.get("text", "")))
            if "image/png" not in o.get("data", {}):
                out.append("".join(o.get("data", {}).get("text/plain", "")))
    return "\n".join(out)


@pytest.fixture(scope="module")
def small_runs(tmp_path_factory):
    """A small configuration, executed twice in a temporary folder."""
    workdir = tmp_path_factory.mktemp("small")
    path = workdir / NOTEBOOK.name
    with_parameters(path, SMALL)
    first = execute(path)
    stamps = {p: p.stat().st_mtime_ns for p in (workdir / "checkpoints").glob("*.pt")}
    second = execute(path)
    return workdir, path, first, second, stamps


def test_small_run_has_no_errors_and_writes_every_figure(small_runs):
    workdir, _, first, _, _ = small_runs
    errors = [o for c in first.cells if c.cell_type == "code"
              for o in c.get("outputs", []) if o.output_type == "error"]
    assert not errors, errors
    assert "2,048 training and 1,000 test images" in outputs_text(first)
    for name in FIGURES:
        png = workdir / "figures" / f"{name}.png"
        assert png.exists() and png.stat().st_size > 5000, name


def test_part5_writes_the_numbers_it_prints_to_metrics_json(small_runs):
    workdir, _, _, second, _ = small_runs
    metrics = json.loads((workdir / "figures" / "metrics.json").read_text())
    text = outputs_text(second)
    for beta in ("beta=1", "beta=4"):
        bounds = metrics[beta]["bounds"]
        assert f"{bounds['test set: -ELBO']['value']:7.2f}" in text
        assert bounds["test set: -ELBO"]["gap"] > 0  # the ELBO lies below log p
        assert f"{metrics[beta]['code']['alignment score']:.3f}" in text
        assert f"{metrics['accuracy'][f'log p, {beta}']['all']:6.1f}" in text
        assert len(metrics[beta]["traversal effects"]) == 2  # axes x digits x factors
    assert "seeds.json is missing" in text  # the temporary copy has none: it goes on


def test_outputs_are_clean_for_the_pdf(small_runs):
    text = outputs_text(small_runs[3])
    assert "\r" not in text and "█" not in text  # no progress-bar debris
    assert not re.search(r"\w+(Warning|Error|Exception)\b", text), text
    assert "β" not in text  # Unicode beta vanishes in the PDF
    assert max(len(line) for line in text.splitlines()) <= MAX_CODE_LINE


def test_second_run_reuses_the_checkpoints_and_shows_the_same_training(small_runs):
    workdir, _, first, second, stamps = small_runs
    assert len(stamps) == 2  # one per model, and the second run wrote neither again
    assert stamps == {p: p.stat().st_mtime_ns for p in (workdir / "checkpoints").glob("*.pt")}
    assert training_output(first) == training_output(second)
    assert "2 epochs" in training_output(second)


def training_output(nb):
    """What the cell that trains the models printed."""
    cell = next(c for c in nb.cells if "fit(" in c.source and "models[beta]" in c.source)
    return outputs_text(nbformat.v4.new_notebook(cells=[cell]))


def test_a_run_with_one_other_beta_runs_top_to_bottom(tmp_path):
    path = tmp_path / NOTEBOOK.name
    with_parameters(path, "EPOCHS, N_TRAIN, N_TEST, SUBSET, GRID_N = 1, 512, 300, 50, 13\n"
                          "BETAS = (0.5,)")  # one epoch: the curves have no later epochs
    text = outputs_text(execute(path))
    assert "beta=0.5: 1 epochs" in text and "beta=1" not in text
    metrics = json.loads((tmp_path / "figures" / "metrics.json").read_text())
    assert list(metrics) == ["beta=0.5", "accuracy"]
    assert (tmp_path / "figures" / "fig1_curves_beta0.5.png").exists()


@pytest.mark.parametrize("source, message", [("EPOCHS = 0", "EPOCHS"),
                                             ("LR = -1.0", "LR"),
                                             ('DEVICE = "gpu"', "device")])
def test_bad_parameters_stop_the_run_before_any_work(tmp_path, source, message):
    path = tmp_path / NOTEBOOK.name
    with_parameters(path, source)
    with pytest.raises(CellExecutionError, match=message):
        execute(path)
    assert not (tmp_path / "checkpoints").exists() and not (tmp_path / "figures").exists()


@pytest.mark.skipif(shutil.which("xelatex") is None, reason="TeX not installed (CI installs it)")
def test_small_run_exports_to_a_readable_pdf(small_runs):
    workdir, path, _, _, _ = small_runs
    subprocess.run([sys.executable, "-m", "jupyter", "nbconvert", "--to", "pdf", path.name],
                   cwd=workdir, check=True, capture_output=True, timeout=600)
    check_pdf(path.with_suffix(".pdf"))


def check_pdf(pdf):
    """Headings, figure numbers, no error text, <= 22 pages, Figure 1 by page 7,
    every image >= 150 ppi."""
    pages = pdftotext_pages(pdf)
    text = "\n".join(pages)
    for heading in ["Part 1", "Part 2", "Part 3", "Part 4", "Part 5"]:
        assert heading in text, heading
    for n in range(1, 10):
        assert f"Figure {n}" in text, n
    assert not re.search(r"\b\w*(Error|Exception|Warning)\b: |Traceback|HBox", text)
    assert not re.search(r"^\d+(\.\d+)+\s+Part", text, re.M)  # no LaTeX section numbers
    assert len(pages) <= 22
    assert min(i for i, p in enumerate(pages, 1) if re.search(r"Figure 1\b", p)) <= 7
    images = subprocess.run(["pdfimages", "-list", str(pdf)], capture_output=True,
                            text=True, check=True).stdout.splitlines()[2:]
    ppi = [int(line.split()[12]) for line in images if line.split()[2] == "image"]
    assert len(ppi) >= 8 and min(ppi) >= 150  # Figures 8 and 9 share one image
    return pages, {int(line.split()[0]) for line in images}  # and the pages with images


def pdftotext_pages(pdf):
    text = subprocess.run(["pdftotext", str(pdf), "-"], capture_output=True, text=True,
                          check=True).stdout
    return text.split("\f")[:-1]


# ---- the committed deliverable ------------------------------------------------------

@pytest.fixture(scope="module")
def committed():
    return nbformat.read(NOTEBOOK, as_version=4)


def test_committed_notebook_is_one_full_clean_run(committed):
    code = [c for c in committed.cells if c.cell_type == "code"]
    assert all(c.execution_count for c in code)
    counts = [c.execution_count for c in code]
    assert counts == list(range(1, len(code) + 1))  # top to bottom, in one kernel
    assert not any(o.output_type == "error" for c in code for o in c.outputs)
    text = outputs_text(committed)
    assert "60,000 training and 10,000 test images" in text and "20 epochs" in text


def test_committed_notebook_keeps_to_the_budgets(committed):
    lines = [[line for line in c.source.splitlines() if line.strip()]
             for c in committed.cells if c.cell_type == "code"]
    assert sum(map(len, lines)) <= 520 and max(map(len, lines)) <= 45
    words = sum(len(c.source.split()) for c in committed.cells if c.cell_type == "markdown")
    assert words <= 2000
    long = [line for c in lines for line in c if len(line) > MAX_CODE_LINE]
    assert not long, long
    assert not any("β" in c.source for c in committed.cells)  # write $\beta$


def test_every_number_in_the_prose_is_in_an_output_above_it(committed):
    """Each decimal number a markdown cell quotes is printed by a cell above it (as a
    whole token, same decimals), or is one of the assignment's settings."""
    above, unsupported = "", []
    for cell in committed.cells:
        if cell.cell_type == "code":
            above += "\n" + outputs_text(nbformat.v4.new_notebook(cells=[cell]))
        elif cell.cell_type == "markdown":
            for quoted in re.findall(r"(?<![\w.])\d+\.\d+(?![\d])", cell.source):
                printed = re.search(rf"(?<![\d.]){re.escape(quoted)}(?!\d)", above)
                if quoted not in ALLOWED and not printed:
                    unsupported.append(quoted)
    assert not unsupported, unsupported


@pytest.mark.skipif(shutil.which("pdftotext") is None, reason="poppler not installed")
def test_committed_pdf_is_readable():
    pages, image_pages = check_pdf(NOTEBOOK.with_suffix(".pdf"))
    # the committed layout: every figure heading on a page with its figure
    headings = [i for i, page in enumerate(pages, 1)
                for heading in re.findall(r"^Figure \d+(?: and Figure \d+)?: ", page, re.M)]
    assert len(headings) == 6 and set(headings) <= image_pages
