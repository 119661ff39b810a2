# cifar_study: `make study` sets everything up, runs the demo study and renders its report; `make test` runs all tests.
VENV ?= .venv
BIN := $(VENV)/bin
PYTHON ?= python3

.PHONY: setup study test export clean-nbs

$(VENV)/.installed: requirements.txt pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -r requirements.txt
	$(BIN)/pip install --quiet --no-deps -e .
	$(BIN)/python -m ipykernel install --sys-prefix --name cifar-study --display-name "cifar-study"
	touch $@

setup: $(VENV)/.installed

study: setup
	$(BIN)/cifar-study data check
	$(BIN)/cifar-study run demo
	$(BIN)/cifar-study status --plan demo --profile demo
	$(BIN)/cifar-study report --profile demo --out docs/demo

test: setup
	$(BIN)/nbdev-test --n-workers 2
	$(BIN)/pytest -q tests

export: setup
	$(BIN)/nbdev-export

clean-nbs: setup
	$(BIN)/nbdev-clean
