# make run   - set everything up, then train and evaluate AlexNet on Fashion-MNIST
# make test  - set everything up, then run the test suite
# make tour  - set everything up, then run the guided tour docs/tour.ipynb and save it with its outputs
# All are safe to run again: set-up is skipped when .venv is current.
PYTHON ?= python3
VENV := .venv
STAMP := $(VENV)/.installed
ARGS ?=
# test processes (pytest-xdist); each file's tests stay in one, so its module fixtures are built once
WORKERS ?= 2

.PHONY: run test tour lint setup data browser clean

run: setup data
	$(VENV)/bin/alexnet train $(ARGS)

test: setup data browser lint
	$(VENV)/bin/python -m pytest -q -n $(WORKERS) --dist loadfile --no-loadscope-reorder $(ARGS)

tour: setup data
	$(VENV)/bin/python scripts/tour.py

lint: setup
	$(VENV)/bin/ruff check src tests benchmarks scripts
	$(VENV)/bin/ruff format --check src tests benchmarks scripts

setup: $(STAMP)

# torch and torchvision first, by exact version, with plain pip (it finds this machine's wheel store)
$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(VENV)/bin/python -m pip install -q torch==2.14.1 torchvision==0.29.1
	$(VENV)/bin/python -m pip install -q -e '.[test]'
	touch $(STAMP)

data:
	@scripts/ensure-data.sh

browser:
	@scripts/ensure-browser.sh

clean:
	rm -rf $(VENV) runs
