# cifar_study: `make study` sets everything up, runs the demo study and renders its report; `make test` runs all tests;
# `make docs` builds the API docs site into docs/api/.
VENV ?= .venv
BIN := $(VENV)/bin
PYTHON ?= python3

.PHONY: setup study test export clean-nbs docs

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

QUARTO_NEEDED := make docs needs Quarto on PATH: install it from https://quarto.org/docs/get-started/ \
	or offline with ../shared/tools/quarto/install.sh PREFIX and PATH=PREFIX/bin:$$PATH

# nbdev-docs renders the notebooks into _docs/ (show_doc signatures added; it runs exported code and imports, not the
# checks); show_doc prints defaults as evaluated, so the packaged notebooks' paths are made relative to the checkout.
docs: setup
	$(if $(shell command -v quarto),,$(error $(QUARTO_NEEDED)))
	$(BIN)/nbdev-docs
	rm -rf docs/api
	mv _docs docs/api
	grep -rlF '$(CURDIR)/' docs/api | xargs -r sed -i 's|$(CURDIR)/||g'
