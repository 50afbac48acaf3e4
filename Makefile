# himbeerecouch: set-up, tests, demo, benchmark, deployment.
# `make demo` and `make test` work on a fresh machine: they install what they need.

PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
PYSTAMP := $(VENV)/.installed
NODESTAMP := testserver/node_modules/.installed

.PHONY: setup browser web test demo bench deploy clean

setup: $(PYSTAMP) $(NODESTAMP) browser

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
# only where it is missing, which needs root (as on a fresh CI machine).
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

test: setup
	$(VENV)/bin/pytest -q -p no:cacheprovider

demo: setup
	$(PY) testserver/demo.py

# One table, also written into bench/RESULTS.md; about 12.5 minutes on 2 cores.
# SOAK: seconds of the soak phase.  The default keeps the whole run under 15
# minutes; the 10-minute soak of issue 5 is `make bench SOAK=600` (about 19 minutes).
SOAK ?= 240
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
