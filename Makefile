# CSC 8851 HW1: make run (full run + PDF), make test (the suite), make bench (speed),
# make seeds (the replication with five seeds per beta, figures/seeds.json),
# make test-oldest (the suite again on the oldest versions requirements.txt allows).
PYTHON ?= python3
VENV   ?= .venv
BIN    := $(VENV)/bin
OLDEST := .venv-oldest
NB     := CSC8851_F2025_HW1_Student.ipynb
SHARED_MNIST := ../shared/data/MNIST/raw
TEX_PACKAGES := texlive-xetex texlive-fonts-recommended texlive-plain-generic pandoc poppler-utils

.PHONY: all run pdf test test-oldest bench seeds submission data venv tex clean
all: test

venv: $(BIN)/.installed
$(BIN)/.installed: requirements.txt requirements-dev.txt
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip
	$(BIN)/python -m pip install -q -r requirements.txt -r requirements-dev.txt
	touch $@

# MNIST: copied from ../shared/data when that folder exists, else the notebook downloads it.
data:
	@if [ ! -f data/MNIST/raw/t10k-labels-idx1-ubyte ] && [ -d $(SHARED_MNIST) ]; then \
	  mkdir -p data/MNIST/raw && cp $(SHARED_MNIST)/*-ubyte data/MNIST/raw/ && \
	  echo "copied MNIST from $(SHARED_MNIST)"; fi

# TeX for the PDF export, from Debian packages (needs root or sudo; skipped when present).
tex:
	@if ! command -v xelatex >/dev/null || ! command -v pandoc >/dev/null; then \
	  SUDO=$$( [ "$$(id -u)" = 0 ] || echo sudo ); \
	  ( $$SUDO apt-get update -qq && DEBIAN_FRONTEND=noninteractive \
	    $$SUDO apt-get install -y -qq $(TEX_PACKAGES) >/dev/null ) || \
	  echo "TeX could not be installed: 'make pdf' will fall back to HTML"; fi

# The full run, executed in place (23 minutes on 2 cores with bf16: README), then the PDF.
run: venv data
	$(BIN)/jupyter nbconvert --to notebook --execute --inplace \
	  --ExecutePreprocessor.timeout=-1 $(NB)
	$(MAKE) pdf

pdf: venv tex
	@$(BIN)/jupyter nbconvert --to pdf $(NB) || { \
	  $(BIN)/jupyter nbconvert --to html $(NB) && \
	  echo "No TeX here: wrote $(NB:.ipynb=.html); open it in a browser and print to PDF."; }

# Your name on the files and on the title block: make submission NAME=Ada_Lovelace
submission: venv
	@test -n "$(NAME)" || { echo "usage: make submission NAME=Your_Name"; exit 2; }
	$(BIN)/python -c "import nbformat; nb = nbformat.read('$(NB)', 4); \
	  nb.metadata.authors = [{'name': '$(NAME)'.replace('_', ' ')}]; \
	  nbformat.write(nb, 'CSC8851_F2025_HW1_$(NAME).ipynb')"
	$(BIN)/jupyter nbconvert --to pdf CSC8851_F2025_HW1_$(NAME).ipynb

test: venv
	$(BIN)/python -m pytest -q tests

# The lower bounds of requirements*.txt, pinned exactly (constraints-oldest.txt), in a
# second environment: the same suite, the notebook's small run and its PDF included.
test-oldest: $(OLDEST)/bin/.installed
	$(OLDEST)/bin/python -m pytest -q tests
$(OLDEST)/bin/.installed: requirements.txt requirements-dev.txt constraints-oldest.txt
	$(PYTHON) -m venv $(OLDEST)
	$(OLDEST)/bin/python -m pip install -q --upgrade pip
	$(OLDEST)/bin/python -m pip install -q -c constraints-oldest.txt \
	  -r requirements.txt -r requirements-dev.txt
	touch $@

bench: venv data
	$(BIN)/python scripts/bench.py

# Outside the graded run and CI: 8 more models (2 to 3 hours on 2 CPU cores); resumable.
seeds: venv data
	$(BIN)/python scripts/seeds.py

clean:
	rm -rf checkpoints .pytest_cache build $(OLDEST)
