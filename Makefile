# ndsclust: `make demo` shows a failover and a failback on a local lab cluster;
# `make test` runs the whole test suite. Both install what is missing first.
.PHONY: demo test bootstrap unit integration e2e schema typecheck bench clean format

PY := .venv/bin/python

bootstrap:
	@tools/bootstrap.sh

demo: bootstrap
	$(PY) -m ndsclust lab demo

test: bootstrap
	.venv/bin/ruff check ndsclust tools tests
	.venv/bin/ruff format --check ndsclust tools tests
	$(PY) -m mypy
	$(PY) -m pytest -q tests

unit: bootstrap
	$(PY) -m pytest -q tests/unit

integration: bootstrap
	$(PY) -m pytest -q tests/integration

e2e: bootstrap
	$(PY) -m pytest -q tests/e2e

# Regenerate schema/ from its source, ndsclust/schema.py.
schema: bootstrap
	$(PY) -m ndsclust schema show --format schema > schema/ndsclust.schema
	$(PY) -m ndsclust schema show --format ldif > schema/ndsclust.ldif

bench: bootstrap
	$(PY) tools/bench_watch.py

# Rewrite the code the way `make test` checks it.
format: bootstrap
	.venv/bin/ruff check --fix ndsclust tools tests
	.venv/bin/ruff format ndsclust tools tests

clean:
	rm -rf .venv .pytest_cache .mypy_cache
