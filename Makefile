# Two commands, each installs what it needs into ./.venv on first use:
#   make sweep   -- the main job (train on digits, then sweep depth N with T fixed; tied
#                   and untied ResNets side by side)
#   make test    -- lint, the whole test suite, the docs, minimum versions (what CI runs)
#   make lint    -- ruff check, ruff format --check, basedpyright on src/
#   make research -- the reproduced experiments at full size: notebooks 07-09, slow claims
#   make figures -- re-run the slow README jobs and rewrite every number in the READMEs
#   make docs     -- build the documentation site into ./site (strict: broken refs fail)
#   make docs-serve -- serve the documentation at http://127.0.0.1:8000 while editing
#   make test-min -- the declared minimum versions (constraints/minimum.txt), fast tests
PYTHON ?= python3
VENV   ?= .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed

.PHONY: sweep train test lint research bench figures docs docs-serve test-min clean

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e ".[test,notebooks,docs,lint]"
	touch $(STAMP)

sweep: $(STAMP)
	$(BIN)/contdepth sweep --untied smooth iid --out contdepth-out

train: $(STAMP)
	$(BIN)/contdepth train --model euler ode plain

# What CI runs (.ci/run): lint, format and type checks, the suite, the site in strict
# mode, and the declared minimum versions.
test: $(STAMP)
	$(MAKE) lint
	$(BIN)/python -m pytest -q -n auto --dist loadfile --no-loadscope-reorder
	$(MAKE) docs
	$(MAKE) test-min

lint: $(STAMP)
	$(BIN)/ruff check src
	$(BIN)/ruff format --check src
	$(BIN)/basedpyright

research: $(STAMP)
	$(BIN)/python -m pytest -q -n auto -m research

figures: $(STAMP)
	$(BIN)/python docs/readme_figures.py --regenerate

docs: $(STAMP)
	NO_MKDOCS_2_WARNING=1 $(BIN)/mkdocs build --strict

docs-serve: $(STAMP)
	NO_MKDOCS_2_WARNING=1 $(BIN)/mkdocs serve --strict

# The oldest supported versions, pinned, without extras (so also: no matplotlib,
# scikit-learn or tqdm), and a fast subset of the tests.
MIN_VENV  ?= .venv-min
MIN_STAMP := $(MIN_VENV)/.installed
MIN_TESTS ?= tests/test_models.py tests/test_errors.py tests/test_packaging.py

$(MIN_STAMP): pyproject.toml constraints/minimum.txt
	$(PYTHON) -m venv $(MIN_VENV)
	$(MIN_VENV)/bin/python -m pip install --quiet --upgrade pip
	$(MIN_VENV)/bin/python -m pip install --quiet -c constraints/minimum.txt \
		-r constraints/minimum.txt -e . "pytest>=7.4" "pytest-xdist>=3.8" \
		"hypothesis>=6.80" "scipy==1.13.1"
	touch $(MIN_STAMP)

test-min: $(MIN_STAMP)
	CONTDEPTH_TEST_XLA_DEFAULTS=1 $(MIN_VENV)/bin/python -m pytest -q -n auto -p no:cacheprovider $(MIN_TESTS)

bench: $(STAMP)
	$(BIN)/python -m benchmarks

clean:
	rm -rf $(VENV) $(MIN_VENV) site contdepth-out .pytest_cache
