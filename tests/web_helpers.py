"""Helpers for the end-to-end tests of the fleet web page in headless Chromium.

The browser is Debian's Chromium (``/usr/bin/chromium``, package ``chromium``)
driven by Playwright's Python package (its pip wheel carries the driver; no
browser is ever downloaded).  Every request a page makes is checked: one that
leaves the database's origin is refused and recorded, and the test fails.

``Site`` prepares one database for the page: `himbeerecouch provision` (which
stores the page in the page database ``himbeerecouch``, readable by anyone,
and opens it at ``.../index.html?db=<the fleet database>``) and operator
users.  ``open_page`` logs a fresh browser context in and opens the page.
"""
import os
import secrets
import urllib.parse

import pytest

from cli_helpers import delete_users, run_cli

CHROMIUM = os.environ.get("HIMBEERECOUCH_CHROMIUM", "/usr/bin/chromium")
# As the machine's notes say: without the background-networking flags Chromium
# tries to reach Google's hosts at every start.
CHROMIUM_ARGS = [
    "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
    "--disable-background-networking", "--disable-component-update", "--disable-sync",
    "--disable-default-apps", "--disable-extensions", "--no-default-browser-check",
]
SCREENSHOTS = os.path.join(os.path.dirname(os.path.abspath(__file__)), "screenshots")
TIMEOUT_MS = 15000
PHONE = {"width": 390, "height": 844}
DESKTOP = {"width": 1280, "height": 900}


def quoted(name):
    return urllib.parse.quote(name, safe="")


PAGE_DATABASE = "himbeerecouch"     # where provisioning stores the page (readable by anyone)


def page_url(couch_url, dbname):
    return "%s/%s/_design/himbeerecouch/index.html?db=%s" % (couch_url, PAGE_DATABASE,
                                                             quoted(dbname))


class Browser:
    """One headless Chromium for a test module; ``context()`` makes a fresh,
    isolated browser context (its own cookies) that may only reach ``origin``."""

    def __init__(self):
        from playwright.sync_api import sync_playwright
        self._pw = sync_playwright().start()
        # Playwright gives every launch a new, empty --user-data-dir of its own.
        self.browser = self._pw.chromium.launch(executable_path=CHROMIUM, headless=True,
                                                args=CHROMIUM_ARGS)
        self.contexts = []

    def context(self, origin, viewport=None):
        ctx = self.browser.new_context(viewport=viewport or DESKTOP, base_url=origin)
        ctx.set_default_timeout(TIMEOUT_MS)
        ctx.foreign_requests = []
        ctx.console_errors = []

        def guard(route):
            url = route.request.url
            if url.startswith(origin + "/") or url.startswith("data:"):
                route.continue_()
            else:
                ctx.foreign_requests.append(url)
                route.abort()
        ctx.route("**/*", guard)
        self.contexts.append(ctx)
        return ctx

    def close_contexts(self):
        for ctx in self.contexts:
            try:
                ctx.close()
            except Exception:  # noqa: BLE001 - already closed with the browser
                pass
        self.contexts = []

    def close(self):
        self.close_contexts()
        self.browser.close()
        self._pw.stop()


def new_page(ctx):
    page = ctx.new_page()
    page.on("pageerror", lambda e: ctx.console_errors.append("pageerror: %s" % e))
    page.on("console", lambda m: ctx.console_errors.append("console.%s: %s" % (m.type, m.text))
            if m.type == "error" else None)
    return page


def screenshot(page, name):
    os.makedirs(SCREENSHOTS, exist_ok=True)
    path = os.path.join(SCREENSHOTS, name + ".png")
    page.screenshot(path=path, full_page=True)
    return path


class Site:
    """A database provisioned for the fleet (by the real `himbeerecouch
    provision`), with operator users for the page."""

    def __init__(self, couch, db):
        self.couch, self.db = couch, db
        self.url = page_url(couch.url, db.name)
        self.origin = couch.url
        self.users = []
        result = run_cli("provision", couch.admin_url, "--database", db.name)
        assert result.returncode == 0, result.stderr
        self.provision_output = result.stdout

    def operator(self, name=None, password=None, roles=("operator",)):
        """An operator user (role ``operator``, a member of the database)."""
        name = name or "op-" + secrets.token_hex(3)
        password = password or "pw-" + secrets.token_hex(6)
        self.couch.admin["_users"].save({"_id": "org.couchdb.user:" + name, "type": "user",
                                         "name": name, "roles": list(roles),
                                         "password": password})
        self.users.append(name)
        return name, password

    def close(self):
        delete_users(self.couch, self.users)


def log_in_session(ctx, origin, name, password):
    """A CouchDB session cookie for the context (POST /_session, as the page's
    own login form does): the tests that are not about logging in start logged in."""
    r = ctx.request.post(origin + "/_session", data={"name": name, "password": password},
                         headers={"Content-Type": "application/json"})
    assert r.status == 200, (r.status, r.text())


def open_page(browser, site, name, password, viewport=None, hash_path="#/"):
    """A fresh context logged in as ``name``, on the page: returns (ctx, page)."""
    ctx = browser.context(site.origin, viewport)
    log_in_session(ctx, site.origin, name, password)
    page = new_page(ctx)
    page.goto(site.url + hash_path)
    page.get_by_role("button", name="Log out").wait_for()
    return ctx, page


def set_editor_text(page, text):
    """Replace the text of the code editor (CodeMirror) as a paste would."""
    content = page.locator(".cm-content")
    content.click()
    page.keyboard.press("Control+a")
    page.keyboard.insert_text(text)


def editor_text(page):
    return page.locator(".cm-content").evaluate(
        "el => el.cmView ? el.cmView.view.state.doc.toString() : "
        "Array.from(el.querySelectorAll('.cm-line')).map(l => l.textContent).join('\\n')")


def assert_only_origin(ctx):
    assert not ctx.foreign_requests, "requests outside the database's origin: %r" % (
        ctx.foreign_requests,)


def assert_no_page_errors(ctx, allowed=()):
    errors = [e for e in ctx.console_errors
              if not any(a in e for a in allowed)]
    assert not errors, errors


def require_browser():
    """A clear failure (not a skip: `make test` installs both) when the
    browser or Playwright is missing."""
    problems = []
    if not os.path.exists(CHROMIUM):
        problems.append("no Chromium at %s (as root: apt-get install chromium; "
                        "`make test` does it)" % CHROMIUM)
    try:
        import playwright  # noqa: F401
    except ImportError:
        problems.append("playwright is not installed (pip install -e '.[test]')")
    if problems:
        pytest.fail("; ".join(problems), pytrace=False)
