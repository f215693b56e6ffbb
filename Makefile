# The two set-up-and-run commands of the README, plus the inner loop.
#   make demo   set up, then promote examples/hello_report.ipynb on the local backend
#   make test   set up everything the tests need (Docker engine, base image), run them all
#   make unit   fast tests only (seconds), for the inner loop
#   make lint   ruff + mypy
SHELL := /bin/bash
VENV ?= .venv
PYTHON ?= python3
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed
PYTEST_ARGS ?=

.PHONY: setup demo test unit lint services labext browser bench clean

$(STAMP): pyproject.toml
	@command -v $(PYTHON) >/dev/null || { apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq python3 python3-venv; }
	@command -v npm >/dev/null || { apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq nodejs npm; }
	# The prebuilt lab extension first, so the editable install's build hook finds it.
	bash .ci/build-labextension.sh
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	@# Built just above: the package's npm build hook need not run again.
	SKIP_JUPYTER_BUILDER=1 $(PY) -m pip install -q -e '.[test]' numpy pandas matplotlib
	touch $(STAMP)

setup: $(STAMP)

demo: setup
	$(VENV)/bin/jupyter-cloudpromote submit examples/hello_report.ipynb --backend local --param n_samples=2000 --wait
	@job=$$($(VENV)/bin/jupyter-cloudpromote list --limit 1 --json | $(PY) -c 'import json,sys; print(json.load(sys.stdin)["jobs"][0]["id"])') && \
	  echo "Outputs of job $$job:" && $(VENV)/bin/jupyter-cloudpromote outputs $$job

services:
	bash .ci/setup-docker.sh
	bash .ci/setup-slurm.sh

labext:
	bash .ci/build-labextension.sh

browser:
	bash .ci/setup-browser.sh

test: setup services labext browser
	$(PY) -m pytest $(PYTEST_ARGS)

unit: setup
	$(PY) -m pytest -m "not slow and not docker and not corpus" -q $(PYTEST_ARGS)

lint: setup
	$(VENV)/bin/ruff check jupyter_cloudpromote tests bench
	$(VENV)/bin/ruff format --check jupyter_cloudpromote tests bench
	$(VENV)/bin/mypy
	cd labextension && npm run lint && npm run typecheck && npm test -- --silent

bench: setup services
	$(PY) bench/deps_corpus.py
	$(PY) bench/docker_submit.py

clean:
	rm -rf $(VENV) build dist .pytest_cache .mypy_cache .ruff_cache
