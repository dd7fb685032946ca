# Two commands: `make bench` and `make test`. Both create .venv and install the package first.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: install bench test test-slow smoke lint clean

install: $(STAMP)

$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip
	$(BIN)/python -m pip install -q torch==2.14.1 torchvision==0.29.1
	$(BIN)/python -m pip install -q -e ".[dev,app,physical,bench]"
	# Reference implementations the parity tests and benchmarks compare against. imagecorruptions goes in without its
	# dependencies: it would pull the GUI opencv-python over opencv-python-headless; it needs pkg_resources.
	# torchattacks pins requests~=2.25 (a resolver conflict); it runs fine with current requests.
	$(BIN)/python -m pip install -q --no-deps imagecorruptions==1.1.2 torchattacks==3.5.1 "setuptools<81"
	touch $(STAMP)

bench: install
	$(BIN)/robustvision bench

# pytest exits 5 when it collects nothing; that is a failure of the suite, not a pass.
test: install
	$(BIN)/python -m pytest -q -ra

test-slow: install
	$(BIN)/python -m pytest -q -ra -m slow

# Every benchmarks/*.py --quick in a temporary ROBUSTVISION_HOME (slow; out of `make test`). SMOKE_ARGS=--no-shared
# hides ../shared/data, as on a fresh clone without it.
smoke: install
	$(BIN)/python benchmarks/smoke.py $(SMOKE_ARGS)

lint: install
	$(BIN)/ruff check .

clean:
	rm -rf $(VENV) runs .pytest_cache
