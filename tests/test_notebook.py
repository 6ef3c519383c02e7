"""The notebook as a whole: a small run of a temporary copy (twice: the second must reuse
the checkpoints), its PDF, and the committed deliverable (full run, budgets, plain code,
and every number its prose quotes)."""
import ast
import json
import re
import shutil
import subprocess
import sys
from types import SimpleNamespace

import nbformat
import pytest
from nbclient import NotebookClient
from nbclient.exceptions import CellExecutionError

from nbdefs import NOTEBOOK, ROOT, mnist_root

FIGURES = ["fig1_curves_beta1", "fig2_curves_beta4", "fig3_reconstructions",
           "fig4_generation", "fig5_latent_scatter", "fig6_traversals_beta1",
           "fig7_traversals_beta4", "fig8_fig9_manifolds", "fig10_seed_traversals",
           "fig11_seeds"]
SMALL = "EPOCHS = 2\nN_TRAIN = 2048\nN_TEST = 1000\nQUAD_STEP = 0.5"
MAX_CODE_LINE = 80  # longer lines wrap in the PDF
MAX_OUTPUT_LINE = 80  # nbconvert's PDF wraps longer output lines
# decimal numbers the prose may quote without an output: the assignment's settings and
# the quadrature's spacing
ALLOWED = {"0.9", "0.95", "0.01", "0.5", "1.0", "0.1"}
SEEDS_JSON = ROOT / "figures" / "seeds.json"
SEED_TRAVERSALS = ROOT / "figures" / "seed_traversals.pt"


def with_parameters(path, source):
    """Write a copy of the notebook with `source` injected after the parameters cell,
    as papermill does."""
    nb = nbformat.read(NOTEBOOK, as_version=4)
    i = next(i for i, c in enumerate(nb.cells) if "parameters" in c.metadata.get("tags", []))
    cell = nbformat.v4.new_code_cell(
        f'DATA_ROOT = {str(mnist_root())!r}\nDEVICE = "cpu"\n{source}')
    cell.metadata["tags"] = ["injected-parameters"]
    nb.cells.insert(i + 1, cell)
    nbformat.write(nb, path)


def execute(path):
    nb = nbformat.read(path, as_version=4)
    NotebookClient(nb, timeout=900, kernel_name="python3",
                   resources={"metadata": {"path": str(path.parent)}}).execute()
    nbformat.write(nb, path)
    return nb


def outputs_text(cells):
    """Every text output of the cells: streams, and the text/plain of displays."""
    out = []
    for c in cells:
        for o in c.get("outputs", []) if c.cell_type == "code" else []:
            out.append("".join(o.get("text", "")))
            if "image/png" not in o.get("data", {}):
                out.append("".join(o.get("data", {}).get("text/plain", "")))
    return "\n".join(out)


def tagged(nb, tag):
    return next(c for c in nb.cells if tag in c.metadata.get("tags", []))


@pytest.fixture(scope="module")
def small(tmp_path_factory):
    """A small configuration, executed twice in a temporary folder that holds the
    committed replication (figures/seeds.json)."""
    workdir = tmp_path_factory.mktemp("small")
    (workdir / "figures").mkdir()
    for committed in (SEEDS_JSON, SEED_TRAVERSALS):  # the replication's files
        shutil.copy(committed, workdir / "figures" / committed.name)
    path = workdir / NOTEBOOK.name
    with_parameters(path, SMALL)
    first = execute(path)
    stamps = {p: p.stat().st_mtime_ns for p in (workdir / "checkpoints").glob("*.pt")}
    second = execute(path)
    return SimpleNamespace(workdir=workdir, path=path, first=first, second=second,
                           stamps=stamps)


def test_small_run_has_no_errors_and_writes_every_figure(small):
    errors = [o for c in small.first.cells if c.cell_type == "code"
              for o in c.get("outputs", []) if o.output_type == "error"]
    assert not errors, errors
    assert "2,048 training and 1,000 test images" in outputs_text(small.first.cells)
    for name in FIGURES:
        png = small.workdir / "figures" / f"{name}.png"
        assert png.exists() and png.stat().st_size > 5000, name


def test_part5_prints_a_row_per_measure_and_the_replication(nb, small):
    """A row for each measure, under its label: this run's two models and chance,
    then [least, largest] over the committed seeds for each beta and in how many
    seeds beta=4 is larger, all read from figures/seeds.json by name."""
    text = outputs_text(small.second.cells)
    measures = json.loads(SEEDS_JSON.read_text())["measures"]
    number = r"-?\d+\.\d\d?"
    assert set(measures["beta=1"]) == set(nb.LABELS)
    for name, label in nb.LABELS.items():
        first, last = measures["beta=1"][name], measures["beta=4"][name]
        spreads = "".join(rf" +\[{re.escape(nb.fmt(min(v)))}, {re.escape(nb.fmt(max(v)))}\]"
                          for v in (first, last))
        larger = sum(b > a for a, b in zip(first, last))
        row = (rf"^{re.escape(label)} +{number} +{number} +{number}{spreads}"
               rf" +{larger}/{len(first)}$")
        assert re.search(row, text, re.M), name


def test_outputs_are_clean_for_the_pdf(small):
    text = outputs_text(small.second.cells)
    assert "\r" not in text and "█" not in text  # no progress-bar debris
    assert not re.search(r"\w+(Warning|Error|Exception)\b", text), text
    assert "β" not in text  # Unicode beta vanishes in the PDF
    assert max(len(line) for line in text.splitlines()) <= MAX_OUTPUT_LINE
    for cell in small.second.cells:  # no stray values: every output is said on purpose
        for o in cell.get("outputs", []):
            assert o.output_type != "execute_result", cell.source


def test_second_run_reuses_the_checkpoints_and_shows_the_same_training(small):
    stamps = {p: p.stat().st_mtime_ns for p in (small.workdir / "checkpoints").glob("*.pt")}
    assert len(small.stamps) == 2 and stamps == small.stamps  # neither written again
    first = outputs_text([tagged(small.first, "train")])
    assert first == outputs_text([tagged(small.second, "train")])
    assert "2 epochs" in first


def test_a_run_with_one_other_beta_and_no_replication_runs_top_to_bottom(tmp_path):
    path = tmp_path / NOTEBOOK.name
    with_parameters(path, "EPOCHS = 1\nN_TRAIN = 512\nN_TEST = 300\n"
                          "QUAD_STEP = 1.0\nBETAS = (0.5,)")  # one epoch: no later epochs
    text = outputs_text(execute(path).cells)
    assert "beta=0.5: 1 epochs" in text and "beta=1" not in text
    assert "seeds.json is missing" in text  # the temporary copy has none: it goes on
    assert "seed_traversals.pt is missing" in text
    assert re.search(r"^KL +-?\d+\.\d\d +0\.00$", text, re.M)  # this run, chance
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
def test_small_run_exports_to_a_readable_pdf(small):
    subprocess.run([sys.executable, "-m", "jupyter", "nbconvert", "--to", "pdf",
                    small.path.name], cwd=small.workdir, check=True, capture_output=True,
                   timeout=600)
    check_pdf(small.path.with_suffix(".pdf"), max_pages=18)


def check_pdf(pdf, max_pages):
    """Headings, figure numbers, no error text, the page budget, Figure 1 by page 7,
    every image >= 150 ppi. Returns the pages' text and the pages with images."""
    pages = pdftotext_pages(pdf)
    text = "\n".join(pages)
    for heading in ["Part 1", "Part 2", "Part 3", "Part 4", "Part 5"]:
        assert heading in text, heading
    for n in range(1, 12):
        assert f"Figure {n}" in text, n
    assert not re.search(r"\b\w*(Error|Exception|Warning)\b: |Traceback|HBox", text)
    assert not re.search(r"^\d+(\.\d+)+\s+Part", text, re.M)  # no LaTeX section numbers
    assert len(pages) <= max_pages
    assert min(i for i, p in enumerate(pages, 1) if re.search(r"Figure 1\b", p)) <= 7
    images = subprocess.run(["pdfimages", "-list", str(pdf)], capture_output=True,
                            text=True, check=True).stdout.splitlines()[2:]
    ppi = [int(line.split()[12]) for line in images if line.split()[2] == "image"]
    assert len(ppi) >= 10 and min(ppi) >= 150  # Figures 8 and 9 share one image
    return pages, {int(line.split()[0]) for line in images}


def pdftotext_pages(pdf):
    text = subprocess.run(["pdftotext", str(pdf), "-"], capture_output=True, text=True,
                          check=True).stdout
    return text.split("\f")[:-1]


# ---- the committed deliverable ------------------------------------------------------

@pytest.fixture(scope="module")
def committed():
    return nbformat.read(NOTEBOOK, as_version=4)


def code_cells(nb):
    return [c for c in nb.cells if c.cell_type == "code"]


def test_committed_notebook_is_one_full_clean_run(committed):
    counts = [c.execution_count for c in code_cells(committed)]
    assert counts == list(range(1, len(counts) + 1))  # top to bottom, in one kernel
    assert not any(o.output_type == "error" for c in code_cells(committed) for o in c.outputs)
    text = outputs_text(committed.cells)
    assert "60,000 training and 10,000 test images" in text and "20 epochs" in text
    assert "seeds.json is missing" not in text


def test_committed_notebook_keeps_to_the_budgets(committed):
    lines = [[line for line in c.source.splitlines() if line.strip()]
             for c in code_cells(committed)]
    assert sum(map(len, lines)) <= 520 and max(map(len, lines)) <= 45
    words = sum(len(c.source.split()) for c in committed.cells if c.cell_type == "markdown")
    assert words <= 2000
    long = [line for c in lines for line in c if len(line) > MAX_CODE_LINE]
    assert not long, long
    assert not any("β" in c.source for c in committed.cells)  # write $\beta$


def test_committed_code_is_plain(committed):
    """No named lambdas, walrus, dict merges, or packed assignments of three or more."""
    source = "\n".join(c.source for c in code_cells(committed))
    tree = ast.parse(re.sub(r"^%.*$", "", source, flags=re.M))  # without IPython magics
    for node in ast.walk(tree):
        assert not isinstance(node, ast.NamedExpr), ast.unparse(node)
        if isinstance(node, ast.Assign):
            assert not isinstance(node.value, ast.Lambda), ast.unparse(node)
            assert len(node.targets) == 1, ast.unparse(node)  # a = b = c
            target = node.targets[0]
            if isinstance(target, ast.Tuple):  # a, b, c = ... (unpacked or packed)
                assert len(target.elts) <= 2, ast.unparse(node)
        assert not (isinstance(node, ast.BinOp) and isinstance(node.op, ast.BitOr)
                    and isinstance(node.left, ast.Dict)), ast.unparse(node)
        assert not isinstance(node, ast.AugAssign) or not isinstance(node.op, ast.BitOr)
        assert not (isinstance(node, ast.Dict) and None in node.keys), ast.unparse(node)


def bound_names(statements):
    """The names that statements bind outside functions, classes and comprehensions."""
    for node in statements:
        if isinstance(node, (ast.FunctionDef, ast.ClassDef, ast.Import, ast.ImportFrom)):
            continue
        targets = []
        if isinstance(node, ast.Assign):
            targets = node.targets
        elif isinstance(node, (ast.AugAssign, ast.AnnAssign, ast.For)):
            targets = [node.target]
        elif isinstance(node, ast.With):
            targets = [item.optional_vars for item in node.items if item.optional_vars]
        for target in targets:
            for sub in ast.walk(target):
                if isinstance(sub, ast.Name) and isinstance(sub.ctx, ast.Store):
                    yield sub.id
        for field in ("body", "orelse"):
            yield from bound_names(getattr(node, field, []))


def test_no_global_is_bound_in_two_parts(committed):
    """A name that one Part binds at the top level is bound in no other Part (loop
    variables and plotting handles aside): Part 5's globals stay Part 5's."""
    shared = {"beta", "fig", "axes", "ax", "fig_no", "letter", "name"}
    part = "setup"
    owner = {}
    for cell in committed.cells:
        heading = re.search(r"^## (Part \d)", cell.source, re.M)
        if cell.cell_type == "markdown" and heading:
            part = heading.group(1)
        if cell.cell_type == "code":
            tree = ast.parse(re.sub(r"^%.*$", "", cell.source, flags=re.M))
            for name in set(bound_names(tree.body)) - shared:
                assert owner.setdefault(name, part) == part, (name, owner[name], part)


def test_the_prose_holds_no_sentence_of_one_draw(committed):
    """A re-run is another draw: the markdown says what holds in every seed of the
    replication, the code prints what is this run's."""
    markdown = "\n".join(c.source for c in committed.cells if c.cell_type == "markdown")
    assert not re.search(r"in this run|by eye|this seed", markdown, re.I)


def test_every_number_in_the_prose_is_in_an_output_above_it(committed):
    """Each decimal number a markdown cell quotes is printed by a cell above it (as a
    whole token, same decimals), or is one of the assignment's settings."""
    above, unsupported = "", []
    for cell in committed.cells:
        if cell.cell_type == "code":
            above += "\n" + outputs_text([cell])
        elif cell.cell_type == "markdown":
            for quoted in re.findall(r"(?<![\w.])\d+\.\d+(?![\d])", cell.source):
                printed = re.search(rf"(?<![\d.]){re.escape(quoted)}(?!\d)", above)
                if quoted not in ALLOWED and not printed:
                    unsupported.append(quoted)
    assert not unsupported, unsupported


@pytest.mark.skipif(shutil.which("pdftotext") is None, reason="poppler not installed")
def test_committed_pdf_is_readable_and_within_its_pages():
    pages, image_pages = check_pdf(NOTEBOOK.with_suffix(".pdf"), max_pages=16)
    part5 = min(i for i, page in enumerate(pages, 1) if re.search(r"^Part 5", page, re.M))
    assert len(pages) - part5 + 1 <= 5
    # every figure heading on a page with its figure
    headings = [i for i, page in enumerate(pages, 1)
                for heading in re.findall(r"^Figure \d+(?: and Figure \d+)?: ", page, re.M)]
    assert len(headings) == 8 and set(headings) <= image_pages
