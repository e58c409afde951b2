# Two commands, each installs what it needs into ./.venv on first use:
#   make sweep   -- the main job (train on digits, then sweep depth N with T fixed)
#   make test    -- the whole test suite (what CI runs)
#   make figures -- re-run the slow README jobs and rewrite every number in the READMEs
PYTHON ?= python3
VENV   ?= .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed

.PHONY: sweep train test bench figures clean

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e ".[test,notebooks]"
	touch $(STAMP)

sweep: $(STAMP)
	$(BIN)/contdepth sweep --out contdepth-out

train: $(STAMP)
	$(BIN)/contdepth train --model euler ode plain

test: $(STAMP)
	$(BIN)/python -m pytest -q -n auto --dist worksteal

figures: $(STAMP)
	$(BIN)/python docs/readme_figures.py --regenerate

bench: $(STAMP)
	$(BIN)/python -m benchmarks

clean:
	rm -rf $(VENV) contdepth-out .pytest_cache
