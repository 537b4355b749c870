# ndsclust: `make demo` shows a failover and a failback on a local lab cluster;
# `make test` runs the whole test suite and reports its coverage of the package (`make
# coverage` lists it per module afterwards). Both install what is missing first.
.PHONY: demo test bootstrap unit integration e2e schema typecheck bench clean format coverage

PY := .venv/bin/python

bootstrap:
	@tools/bootstrap.sh

demo: bootstrap
	$(PY) -m ndsclust lab demo

test: bootstrap
	.venv/bin/ruff check ndsclust tools tests
	.venv/bin/ruff format --check ndsclust tools tests
	$(PY) -m mypy
	$(PY) -m pytest -q --durations=15 --cov --cov-report= tests
	@echo "coverage: $$($(PY) -m coverage report --format=total)% of ndsclust (lines and branches, the tests' own process; make coverage: per module)"

unit: bootstrap
	$(PY) -m pytest -q tests/unit

integration: bootstrap
	$(PY) -m pytest -q tests/integration

e2e: bootstrap
	$(PY) -m pytest -q tests/e2e

typecheck: bootstrap
	$(PY) -m mypy

# Regenerate schema/ from its source, ndsclust/schema.py.
schema: bootstrap
	$(PY) -m ndsclust schema show --format schema > schema/ndsclust.schema
	$(PY) -m ndsclust schema show --format ldif > schema/ndsclust.ldif

# Per module, least covered first, from the last `make test` (or any pytest --cov run).
coverage: bootstrap
	$(PY) -m coverage report

bench: bootstrap
	$(PY) tools/bench_watch.py

# Rewrite the code the way `make test` checks it.
format: bootstrap
	.venv/bin/ruff check --fix ndsclust tools tests
	.venv/bin/ruff format ndsclust tools tests

clean:
	rm -rf .venv .pytest_cache .mypy_cache .ruff_cache .coverage
