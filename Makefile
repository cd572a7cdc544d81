# Set-up-included entry points. Each target creates .venv and installs the project on first use.
VENV ?= .venv
PY := $(VENV)/bin/python
ARGS ?=

.PHONY: setup train test test-slow test-all test-random lint format bench docs

$(VENV)/.installed: pyproject.toml
	python3 -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -e '.[dev,timm,docs]'
	touch $@

setup: $(VENV)/.installed

# The main job: CIFAR-10, compact CNN, 20 epochs. Data: torchvision download into data/cifar10, or
# ARGS="--data.data_dir ../shared/data/cifar10" for a local ImageFolder copy.
train: setup
	$(PY) train.py fit --config configs/cifar10_compact.yaml $(ARGS)

# Lint, then the default test suite (no slow tests; docs/development.md says how long it takes).
test: setup
	$(PY) -m ruff check .
	$(PY) -m ruff format --check .
	$(PY) -m pytest

test-slow: setup
	$(PY) -m pytest -m slow

# What CI runs (.ci/run): lint, then every test, slow ones included.
test-all: setup
	$(PY) -m ruff check .
	$(PY) -m ruff format --check .
	$(PY) -m pytest -m "slow or not slow"

# The default suite in a shuffled order (pytest-random-order): SEED=<n> repeats an order.
SEED ?= 1
test-random: setup
	$(PY) -m pytest --random-order-bucket=module --random-order-seed=$(SEED)

format: setup
	$(PY) -m ruff check --fix .
	$(PY) -m ruff format .

# Speed figures (docs/results.md): Lightning vs a plain loop, and each training trick on vs off.
bench: setup
	$(PY) benchmarks/fit_overhead.py --steps 150 --warmup 20 --rounds 5
	$(PY) benchmarks/callback_overhead.py

# The docs site (docs/ + mkdocs.yml) into site/; --strict: a broken link, a missing anchor or API object, or a
# docstring that documents a parameter the signature lacks fails the build. NO_MKDOCS_2_WARNING silences
# mkdocs-material's notice about MkDocs 2.0 (an advert, not a warning about this site).
docs: setup
	NO_MKDOCS_2_WARNING=1 $(VENV)/bin/mkdocs build --strict
