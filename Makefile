# himbeerecouch: set-up, tests, demo, benchmark, deployment.
# `make demo` and `make test` work on a fresh machine: they install what they need.

PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
PYSTAMP := $(VENV)/.installed
NODESTAMP := testserver/node_modules/.installed

.PHONY: setup test demo bench deploy clean

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

# One table, also written into bench/RESULTS.md; under 10 minutes on 2 cores.
# SOAK: seconds of the soak phase (the issue's full soak: make bench SOAK=600,
# which alone takes the whole 10 minutes).
SOAK ?= 180
bench: setup
	$(PY) bench/run.py --soak $(SOAK)

# Install the agent, its service file and the server file into a netboot root
# folder, without touching this machine (logic: himbeerecouch/deploy.py):
#   make deploy NFSROOT=/srv/nfs/pi [SERVER=http://couch.lab:5984]
#               [SERVICE=systemd|supervisord|sysv|none]
deploy: $(PYSTAMP)
	$(PY) -m himbeerecouch.deploy --source "$(CURDIR)" --root "$(NFSROOT)" \
		$(if $(SERVER),--server "$(SERVER)") $(if $(SERVICE),--service "$(SERVICE)")

clean:
	rm -rf $(VENV) testserver/node_modules *.egg-info
