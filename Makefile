# himbeerecouch: set-up, tests, demo, a local server, benchmark, deployment.
# `make demo` and `make test` work on a fresh machine with python3-venv, nodejs and npm:
# they install what they need.  Only `make test` may need root (for Debian's chromium).

PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
PYSTAMP := $(VENV)/.installed
NODESTAMP := testserver/node_modules/.installed

.PHONY: setup browser web test demo server bench deploy clean

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

# Debian's Chromium for the browser tests of the web page (tests/test_web.py, driven
# by Playwright from the test extra; no test tool ever downloads a browser).  Installed
# only where it is missing, which needs root (as on a fresh CI machine); the demo and
# the server never need it.
CHROMIUM ?= /usr/bin/chromium
browser:
	@test -x $(CHROMIUM) || { \
		echo "installing Debian's chromium (for tests/test_web.py)"; \
		apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq \
			--no-install-recommends chromium fonts-dejavu-core >/dev/null; }

# Rebuild the web page from web/ into himbeerecouch/ops/web/ (committed, so neither
# `make test` nor `himbeerecouch provision` needs this or Node.js packages).
WEBSTAMP := web/node_modules/.installed
$(WEBSTAMP): web/package.json web/package-lock.json
	cd web && npm ci --no-audit --no-fund --loglevel=error
	touch $@

web: $(WEBSTAMP)
	cd web && node build.mjs

test: setup browser
	$(VENV)/bin/pytest -q -p no:cacheprovider

# The server on 127.0.0.1 (in memory), the database provisioned, an operator, the
# agent of a made-up Pi in the foreground; Ctrl-C stops everything.
demo: setup
	$(PY) testserver/demo.py

# The same server and database, kept: data in $(SERVER_DATA) across runs, on port
# $(PORT), running until Ctrl-C, without an agent (it prints how to start one).
PORT ?= 5985
SERVER_DATA ?= .server
server: setup
	$(PY) testserver/demo.py --server-only --port $(PORT) --data $(SERVER_DATA)

# One table, also written into bench/RESULTS.md; about 12.5 minutes on 2 cores.
# SOAK: seconds of the soak phase.  The default keeps the whole run under 15
# minutes; the 10-minute soak of issue 5 is `make bench SOAK=600` (about 19 minutes).
# COUCHDB_URL (http://admin:pw@127.0.0.1:5984): every phase against that server
# (Apache CouchDB) instead of the test server; what the bench makes there it deletes.
SOAK ?= 240
export COUCHDB_URL
bench: setup
	$(PY) bench/run.py --soak $(SOAK)

# Install the agent, its service file and the server file into a netboot root
# folder, without touching this machine (logic: himbeerecouch/ops/deploy.py):
#   make deploy NFSROOT=/srv/nfs/pi [SERVER=http://couch.lab:5984]
#               [SERVICE=systemd|supervisord|sysv|none]
deploy: $(PYSTAMP)
	$(PY) -m himbeerecouch.ops.deploy --source "$(CURDIR)" --root "$(NFSROOT)" \
		$(if $(SERVER),--server "$(SERVER)") $(if $(SERVICE),--service "$(SERVICE)")

clean:
	rm -rf $(VENV) testserver/node_modules web/node_modules *.egg-info
	@echo 'kept: $(SERVER_DATA)/ (the databases of make server); remove it by hand'
