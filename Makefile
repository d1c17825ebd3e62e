# Two entry points: `make demo` (the shapes lab) and `make test` (the suite). Both build .venv on first use.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

$(STAMP): pyproject.toml constraints.txt
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip
	# torch first and pinned, so the resolver takes the local CPU build instead of a multi-GB CUDA one.
	$(BIN)/pip install -q "torch==2.13.0"
	# The rest at the versions in constraints.txt, so every fresh install reproduces the same runs.
	$(BIN)/pip install -q -c constraints.txt -e ".[dev,parity]"
	# The reference scorers the parity tests compare with. lmms-eval's requirements would pull torchvision, which
	# does not match the CPU torch build: the package alone, its scorers' imports come with the `parity` extra.
	$(BIN)/pip install -q --no-deps "lmms-eval==0.7.3"
	touch $(STAMP)

.PHONY: install demo test lint clean
install: $(STAMP)

demo: $(STAMP)
	$(BIN)/vlmforge demo --out runs/lab

test: lint
	HF_HUB_OFFLINE=1 TRANSFORMERS_OFFLINE=1 $(BIN)/python -m pytest -q tests

lint: $(STAMP)
	$(BIN)/ruff check src tests bench
	$(BIN)/ruff format --check src tests bench
	# The layers and the ban on import cycles (contracts in pyproject.toml).
	$(BIN)/lint-imports

clean:
	rm -rf $(VENV) runs .pytest_cache
