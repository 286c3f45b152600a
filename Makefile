# synthsat — `make demo` and `make test` are all a fresh machine needs.
PYTHON ?= python3
VENV   ?= .venv
PY     := $(VENV)/bin/python
STAMP  := $(VENV)/.installed
LOCK   := requirements/constraints.txt
EXPERIMENT ?= paper

.PHONY: setup lock test demo lint bench reproduce mutate clean

# The tested versions: dependencies are installed within $(LOCK) (pip constraints).
$(STAMP): pyproject.toml $(LOCK)
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q -c $(LOCK) -e ".[dev]"
	touch $(STAMP)

setup: $(STAMP)

# Refresh $(LOCK) from the working .venv (after adding a dependency to pyproject.toml, or
# upgrading with `.venv/bin/python -m pip install -U ...`), then run `make test`.
lock: setup
	$(PY) requirements/lock.py $(LOCK)

test: setup
	$(PY) -m pytest tests

demo: setup
	$(PY) -m synthsat.pipeline experiment=demo

lint: setup
	$(PY) -m ruff check synthsat tests benchmarks requirements
	$(PY) -m ruff format --check synthsat tests benchmarks requirements

bench: setup
	@for f in benchmarks/*.py; do echo "== $$f"; $(PY) $$f || exit 1; done

reproduce: setup
	$(PY) -m synthsat.pipeline experiment=$(EXPERIMENT)

# Mutation testing of the modules the results depend on ([tool.mutmut] in pyproject.toml);
# not part of `make test` (about an hour on 2 cores). MUTANTS="synthsat.losses*" runs a
# subset; results are kept in mutants/ and reused for unchanged code.
MUTANTS ?=
mutate: setup
	$(PY) -m pip install -q -c $(LOCK) -e ".[dev,mutate]"
	-$(PY) -m mutmut run --max-children $$(nproc) $(MUTANTS)
	$(PY) tests/mutation_score.py

clean:
	rm -rf $(VENV) .pytest_cache outputs multirun mutants
