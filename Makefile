# retina-trt: the two commands of the README (`make demo`, `make test`) set everything up on a
# fresh machine. The virtual environment is .venv; pins come from constraints.txt.

PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
PIP_FLAGS ?= --disable-pip-version-check --progress-bar off

.PHONY: venv test test-all lint demo clean

venv: $(STAMP)

$(STAMP): setup.py pyproject.toml constraints.txt
	@test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install $(PIP_FLAGS) --upgrade "pip>=24" "setuptools>=68" wheel
	$(BIN)/python -m pip install $(PIP_FLAGS) -c constraints.txt -e ".[dev]"
	@touch $(STAMP)

lint: $(STAMP)
	$(BIN)/ruff check .

# The default run: everything but tests marked `slow` (and `gpu` tests skip without a GPU).
test: lint
	$(BIN)/python -m pytest -m "not slow" -q

# Everything, slow tests included.
test-all: lint
	$(BIN)/python -m pytest -q

demo: $(STAMP)
	$(BIN)/python samples/demo.py --out demo-output

clean:
	rm -rf $(VENV) demo-output build *.egg-info
