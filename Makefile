# himbeerecouch: set-up, tests, demo, benchmark, deployment.
# `make demo` and `make test` work on a fresh machine: they install what they need.

PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
PYSTAMP := $(VENV)/.installed
NODESTAMP := testserver/node_modules/.installed

.PHONY: setup test demo bench clean

setup: $(PYSTAMP) $(NODESTAMP)

$(PYSTAMP): setup.cfg pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(VENV)/bin/pip install --quiet --disable-pip-version-check -e '.[test]'
	touch $@

# The CouchDB-protocol test server (PouchDB Server parts), pinned by the lock file.
# --ignore-scripts: nothing in it needs a compiler (leveldown ships prebuilt binaries).
$(NODESTAMP): testserver/package.json testserver/package-lock.json
	cd testserver && npm ci --ignore-scripts --no-audit --no-fund --loglevel=error
	touch $@

test: setup
	$(VENV)/bin/pytest -q -p no:cacheprovider

demo: setup
	$(PY) testserver/demo.py

bench: setup
	$(PY) bench/run.py

clean:
	rm -rf $(VENV) testserver/node_modules *.egg-info
