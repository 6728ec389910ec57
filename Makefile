# Two entry points for a fresh machine: `make demo` and `make test`. Both create or reuse .venv.
# Ray (the optional `ray` extra) is installed too, so the tests exercise `reproduce --cluster ray`.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

# torch 2.14.1 / torchvision 0.29.1 install from the local wheel cache on the team's machines;
# elsewhere pip downloads them. torchattacks is the reference the tests and benchmarks check our attacks
# against (the package never imports it); it is installed without its dependencies because 3.5.1 pins
# requests~=2.25.1 (old, with known CVEs) that nothing here needs; see README.
$(STAMP): pyproject.toml Makefile
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet "torch==2.14.1" "torchvision==0.29.1"
	$(BIN)/pip install --quiet -e ".[test,ray]"
	$(BIN)/pip install --quiet --no-deps "torchattacks==3.5.1"
	touch $(STAMP)

.PHONY: install demo test bench clean
install: $(STAMP)

demo: $(STAMP)
	$(BIN)/mm-robust reproduce --preset smoke

test: $(STAMP)
	$(BIN)/lint-imports
	$(BIN)/python -m pytest tests

bench: $(STAMP)
	$(BIN)/python benchmarks/run.py

clean:
	rm -rf $(VENV) checkpoints attacks reports
