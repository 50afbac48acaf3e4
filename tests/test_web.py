"""The fleet web page, end to end: headless Chromium against the real test
server, with the real agent running a device.

The page is what `himbeerecouch provision` stores in the page database
``himbeerecouch`` (readable by anyone); the tests open it at
``<server>/himbeerecouch/_design/himbeerecouch/index.html?db=<db>`` as an operator.  Every
test leaves screenshots in tests/screenshots/ (also when it fails), and
fails if the page asked for anything outside the database's origin.
"""
import email.utils
import hashlib
import os
import re
import socket
import time
import urllib.request

import pytest

from cli_helpers import run_cli
from helpers import loop_code, random_macid, wait_for
from web_helpers import (DESKTOP, PAGE_DATABASE, PHONE, Browser, Site, assert_no_page_errors,
                         assert_only_origin, editor_text, log_in_session, new_page, open_page,
                         quoted, require_browser, screenshot, set_editor_text)

from himbeerecouch.ops import csp, webassets

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

EXPECT_MS = 20000


@pytest.fixture(scope="module")
def browser():
    require_browser()
    b = Browser()
    try:
        yield b
    finally:
        b.close()


@pytest.fixture
def web(browser, request):
    """The browser for one test: its contexts are closed afterwards, each open
    page photographed first (so a failing test leaves its picture too)."""
    yield browser
    name = re.sub(r"[^A-Za-z0-9_]+", "-", request.node.name)
    n = 0
    for ctx in browser.contexts:
        for page in ctx.pages:
            n += 1
            try:
                screenshot(page, "%s-end-%d" % (name, n))
            except Exception:  # noqa: BLE001 - the page may be gone
                pass
    browser.close_contexts()


@pytest.fixture
def site(couch, db, device):
    # ``device`` first: its fixture sets the members of the database, which
    # provisioning then merges its roles into.
    s = Site(couch, db)
    try:
        yield s
    finally:
        s.close()


def expect(locator, text=None, timeout=EXPECT_MS):
    from playwright.sync_api import expect as pw_expect
    if text is None:
        pw_expect(locator).to_be_visible(timeout=timeout)
    else:
        pw_expect(locator).to_contain_text(text, timeout=timeout)


def expect_focused(locator, timeout=EXPECT_MS):
    from playwright.sync_api import expect as pw_expect
    pw_expect(locator).to_be_focused(timeout=timeout)


def fleet_row(page, macid):
    return page.locator('tr[data-device="%d"]' % macid)


def code_doc(db, doc_id, macid, name, code, creator="admin"):
    db.admin.save({"_id": doc_id, "type": macid, "name": name, "code": code,
                   "created_by": creator})


# ---------------------------------------------------------------------------
def test_the_built_page_matches_its_sources():
    """himbeerecouch/ops/web/ is committed: it must be the build of web/ as it is
    (else: make web).  The same hash as web/build.mjs, without Node."""
    info = webassets.build_info()
    web = os.path.join(ROOT, "web")
    files = ["build.mjs", "package.json", "package-lock.json"] + [
        "src/" + f for f in sorted(os.listdir(os.path.join(web, "src"))) if not f.startswith(".")
    ] + ["../himbeerecouch/ops/design/classify.js"]     # shared with the design document
    h = hashlib.sha256()
    for name in files:
        h.update(name.encode() + b"\0")
        with open(os.path.join(web, name), "rb") as f:
            h.update(f.read())
        h.update(b"\0")
    assert info["sources"] == files
    assert info["source_sha256"] == h.hexdigest(), "web/ changed since the last build: run make web"
    served = webassets.attachments()
    assert set(served) == set(info["files"]) >= {"index.html", "app.js", "style.css"}
    assert served["index.html"][0].startswith("text/html")
    # Everything the page loads is relative to it (no CDN, no absolute URL).
    html = served["index.html"][1].decode()
    assert not re.search(r'(src|href)="(https?:)?//', html), html


def test_the_csp_check_knows_which_policies_stop_the_page():
    assert csp.blocks_scripts("sandbox")
    assert csp.blocks_scripts("sandbox allow-scripts")
    assert not csp.blocks_scripts("sandbox allow-scripts allow-same-origin allow-forms")
    assert not csp.blocks_scripts(csp.POLICY)
    assert "'self'" in csp.POLICY and "sandbox" not in csp.POLICY and "*" not in csp.POLICY


def test_page_is_provisioned_and_reprovisioning_upgrades_it(site, couch, db):
    """The page lives in the page database, readable by anyone; provisioning
    again writes nothing unless the page changed (compared by what provision
    wrote, not by the server's digests, which CouchDB computes on compressed text)."""
    page_db = couch.admin[PAGE_DATABASE]

    def assert_current():
        for name, (kind, data) in webassets.attachments().items():
            stored = page_db.get_attachment("_design/himbeerecouch", name)
            assert stored is not None and stored.read() == data, name
        return page_db["_design/himbeerecouch"]["_attachments"]
    assert "web page: %s" % site.url in site.provision_output
    assert {"index.html", "app.js", "style.css"} <= set(assert_current())
    # The fleet database's design document holds no page (it would need a login).
    assert not set(webassets.attachments()) & set(
        db.admin["_design/himbeerecouch"].get("_attachments") or {})
    # An older page, and an attachment of the lab's own beside it.
    ddoc = page_db["_design/himbeerecouch"]
    page_db.put_attachment(ddoc, b"<p>old page</p>", "index.html", "text/html")
    ddoc = page_db["_design/himbeerecouch"]
    ddoc["page"] = dict(ddoc["page"], source_sha256="an older build")
    page_db.save(ddoc)
    ddoc = page_db["_design/himbeerecouch"]
    page_db.put_attachment(ddoc, b"lab notes", "notes.txt", "text/plain")
    again = run_cli("provision", couch.admin_url, "--database", db.name)
    assert again.returncode == 0, again.stderr
    assert "web page: updated" in again.stdout
    assert_current()
    assert page_db.get_attachment("_design/himbeerecouch", "notes.txt").read() == b"lab notes"
    rev = page_db["_design/himbeerecouch"].rev
    third = run_cli("provision", couch.admin_url, "--database", db.name)
    assert "web page: up to date" in third.stdout
    assert "_design/himbeerecouch: up to date" in third.stdout
    assert page_db["_design/himbeerecouch"].rev == rev


def test_the_first_visit_is_the_pages_login_form(site, db, web):
    """A browser with no session opens the printed URL and gets the page's own
    login form, not JSON; the fleet database stays closed to it."""
    name, password = site.operator()
    ctx = web.context(site.origin)
    assert ctx.request.get(site.origin + "/" + quoted(db.name)).status in (401, 403)
    assert ctx.request.get(site.origin + "/" + quoted(db.name) + "/_design/himbeerecouch"
                           ).status in (401, 403)
    page = new_page(ctx)
    page.goto(site.url)
    page.get_by_label("User name").fill(name)
    page.get_by_label("Password").fill(password)
    page.get_by_role("button", name="Log in").click()
    page.get_by_role("button", name="Log out").wait_for()
    screenshot(page, "first-visit-logged-in")
    # The page database holds the page and nothing a stranger could change.
    anonymous = web.context(site.origin)
    answer = anonymous.request.put(site.origin + "/" + PAGE_DATABASE + "/sneaky",
                                   data='{"x": 1}', headers={"Content-Type": "application/json"})
    assert answer.status in (401, 403), answer.text()
    assert_only_origin(ctx)
    assert_no_page_errors(ctx, allowed=("401", "Unauthorized"))


def test_on_couchdb_provision_lets_the_page_run(site, couch):
    """CouchDB 3.2+ sandboxes attachments by default; provision (as a server
    admin) replaced the policy by one that runs the page's own scripts only.
    The test server sends no policy at all."""
    answer = urllib.request.urlopen(site.url, timeout=30)
    policy = answer.headers.get("Content-Security-Policy")
    if couch.external:
        assert "server: [csp]" in site.provision_output
        assert policy and not csp.blocks_scripts(policy), policy
        assert "script-src 'self'" in policy
    else:
        assert policy is None


def test_a_server_that_blocks_scripts_in_attachments_is_explained(site, web):
    """CouchDB >= 3.2 sends ``Content-Security-Policy: sandbox`` with attachments by
    default, which stops every script of the page: the page itself says what to do."""
    name, password = site.operator()
    ctx = web.context(site.origin)
    log_in_session(ctx, site.origin, name, password)

    def sandboxed(route):
        response = route.fetch()
        route.fulfill(response=response,
                      headers=dict(response.headers, **{"content-security-policy": "sandbox"}))
    ctx.route(site.url, sandboxed)
    page = new_page(ctx)
    page.goto(site.url)
    expect(page.locator(".boot-help"), "attachments_header_value")
    expect(page.locator(".boot-help"))
    screenshot(page, "blocked-by-csp")
    assert_only_origin(ctx)


def test_log_in_see_the_fleet_and_a_wrong_password(site, db, device, make_device, start_agent, web):
    name, password = site.operator()
    agent = start_agent(device)
    code_doc(db, "%d_blink" % device.macid, device.macid, "blink", loop_code("blink"))
    agent.wait_line(r"blink started")
    # A device that has code but has never sent a heartbeat, and one whose
    # heartbeat the page cannot read fully.
    waiting = random_macid()
    code_doc(db, "%d_waiting" % waiting, waiting, "waiting", loop_code("w"))
    broken = random_macid()
    db.admin.save({"_id": "%d_heartbeat" % broken, "type": "heartbeat", "created_by": str(broken),
                   "workers": "not a list",
                   "timestamp": email.utils.formatdate(usegmt=True)})

    # An anonymous browser gets the page, which asks for a login, and nothing of
    # the fleet database (a database with members).
    ctx = web.context(site.origin)
    anon = new_page(ctx)
    assert anon.goto(site.url).status == 200
    anon.get_by_label("User name").wait_for()
    assert ctx.request.get(site.origin + "/" + quoted(db.name) + "/_all_docs").status in (401, 403)

    ctx, page = open_page(web, site, name, password)
    row = fleet_row(page, device.macid)
    expect(row.locator('[data-alive="fresh"]'))
    expect(row, "1 running")
    expect(row, "127.0.0.1")
    expect(fleet_row(page, waiting).locator('[data-alive="none"]'), "no heartbeat yet")
    expect(fleet_row(page, broken), "unreadable heartbeat")
    screenshot(page, "fleet")

    # Log out: the page shows its login form; a wrong password says so.
    # With the keyboard only: the form has the focus, Tab leads on, Enter submits.
    page.get_by_role("button", name="Log out").click()
    expect_focused(page.get_by_label("User name"))
    page.keyboard.type(name)
    page.keyboard.press("Tab")
    page.keyboard.type("not-the-password")
    page.keyboard.press("Enter")
    expect(page.get_by_role("alert"), "Wrong user name or password")
    screenshot(page, "login-wrong-password")
    # The right one: the fleet again, live — a second device appears without reload.
    expect_focused(page.get_by_label("Password"))
    page.keyboard.type(password)
    page.keyboard.press("Enter")
    expect(fleet_row(page, device.macid).locator('[data-alive="fresh"]'))
    other = make_device()
    start_agent(other)
    expect(fleet_row(page, other.macid).locator('[data-alive="fresh"]'))

    # The connection goes: the page says so, and recovers by itself.
    ctx.set_offline(True)
    expect(page.locator("#connection-banner"), "Connection lost")
    ctx.set_offline(False)
    page.locator("#connection-banner").wait_for(state="detached", timeout=EXPECT_MS)

    # Phone width: the same rows, as cards, nothing cut off sideways.
    page.set_viewport_size(PHONE)
    expect(fleet_row(page, device.macid), "fresh")
    width = page.evaluate("document.documentElement.scrollWidth")
    assert width <= PHONE["width"], width
    screenshot(page, "fleet-phone")
    assert_only_origin(ctx)
    assert_no_page_errors(ctx, allowed=("401", "Failed to load resource", "ERR_INTERNET_DISCONNECTED"))


def test_edit_code_and_see_the_new_workers_log_line(site, db, device, start_agent, web):
    name, password = site.operator()
    agent = start_agent(device)
    ctx, page = open_page(web, site, name, password, hash_path="#/device/%d" % device.macid)
    # The MacID, or the device's hostname once its heartbeat is in.
    expect(page.locator("h1"), re.compile(r"%d|%s" % (device.macid, re.escape(socket.gethostname()))))
    expect(page.locator(".facts [data-alive]"), "fresh")

    # A new code document, created in the page.
    page.get_by_role("link", name="New code document").click()
    page.get_by_label("Name").fill("greeter")
    set_editor_text(page, loop_code("hello from the page"))
    page.get_by_role("button", name="Create").click()
    doc_id = "%d_greeter" % device.macid
    expect(page.locator(".editor-panel .sub"), doc_id)
    agent.wait_line(r"\[greeter\] hello from the page started", timeout=20)
    stored = db.admin[doc_id]
    assert stored["type"] == device.macid and isinstance(stored["type"], int)
    assert stored["created_by"] == name and stored["name"] == "greeter"
    assert email.utils.parsedate_to_datetime(stored["timestamp"]) is not None
    assert stored["timestamp"].endswith(" GMT"), stored["timestamp"]
    log = page.locator('[data-log="%s"]' % doc_id)
    expect(log, "hello from the page started")
    expect(page.locator('[data-worker="%s"]' % doc_id), "running")

    # Edit it: a module, the main code; save; the new worker's line appears live.
    page.get_by_role("button", name="+ module").click()
    page.get_by_label("Name of the new module").fill("words")
    page.get_by_role("button", name="Add", exact=True).click()
    set_editor_text(page, 'GREETING = "edited in the browser"\n')
    page.locator('button[data-file="code"]').click()
    set_editor_text(page, "import time\nimport words\n\n\ndef main():\n"
                          "    log(words.GREETING)\n"
                          "    while not should_quit():\n        time.sleep(0.05)\n")
    page.get_by_role("button", name="Save").click()
    expect(page.locator(".editor-form .status"), "Saved")
    expect(log, "edited in the browser")
    stored = db.admin[doc_id]
    assert stored["modules"] == {"words": 'GREETING = "edited in the browser"\n'}
    assert "words.GREETING" in stored["code"] and stored["created_by"] == name
    assert editor_text(page) == stored["code"]
    screenshot(page, "device-edited")
    page.set_viewport_size(PHONE)
    expect(log, "edited in the browser")
    assert page.evaluate("document.documentElement.scrollWidth") <= PHONE["width"]
    screenshot(page, "device-phone")
    page.set_viewport_size(DESKTOP)

    # A document the page cannot parse is shown, not edited (and not changed).
    db.admin.save({"_id": "%d_odd" % device.macid, "type": device.macid, "name": "odd",
                   "created_by": "admin", "modules": "not an object"})
    page.get_by_role("button", name="Close").click()
    expect(page.locator('li[data-doc="%d_odd"]' % device.macid), "cannot be shown")
    page.locator('li[data-doc="%d_odd"] a' % device.macid).click()
    expect(page.get_by_role("alert").first, "cannot be edited in the page")
    screenshot(page, "device-unparsable")
    page.get_by_role("button", name="Close").click()

    # Delete the document: its worker stops.
    page.locator('li[data-doc="%s"] a' % doc_id).click()
    mark = agent.mark()
    page.once("dialog", lambda d: d.accept())
    page.get_by_role("button", name="Delete document").click()
    expect(page.locator(".code-list"), "odd")
    wait_for(lambda: db.admin.get(doc_id) is None, message="document deleted")
    agent.wait_line(r"greeter: RUNNING -> STOPPING", after=mark, timeout=20)
    page.locator('[data-worker="%s"]' % doc_id).wait_for(state="detached", timeout=EXPECT_MS)
    assert_only_origin(ctx)
    assert_no_page_errors(ctx, allowed=("Failed to load resource",))


def test_run_a_command_and_see_its_output(site, db, device, start_agent, web):
    name, password = site.operator()
    start_agent(device)
    ctx, page = open_page(web, site, name, password, hash_path="#/device/%d" % device.macid)
    expect(page.locator(".facts [data-alive]"), "fresh")
    box = page.get_by_role("textbox", name="Command")
    box.fill("echo 'hello from a command'")
    box.press("Enter")
    result = page.locator("article.cmd", has_text="hello from a command")
    expect(result.locator(".stdout"), "hello from a command")
    expect(result.locator(".exit-code"), "0")
    box.fill('sh -c "echo oops >&2; exit 3"')
    page.get_by_role("button", name="Run").click()
    result = page.locator("article.cmd", has_text="exit 3")
    expect(result.locator(".stderr"), "oops")
    expect(result.locator(".exit-code"), "3")
    expect(result.locator(".badge"), "failed")         # not a green "finished"
    expect(page.locator("article.cmd", has_text="hello from a command").locator(".badge"),
           "finished")
    docs = [r.doc for r in db.admin.view("_all_docs", include_docs=True)
            if r.doc.get("type") == "%d_cmd" % device.macid]
    assert len(docs) == 2
    for doc in docs:
        assert doc["created_by"] == name
        assert doc["timestamp"].endswith(" GMT")
    assert sorted(d["cmd"] for d in docs) == [["echo", "hello from a command"],
                                              ["sh", "-c", "echo oops >&2; exit 3"]]
    screenshot(page, "command")

    # The session runs out while a command is typed: the page asks for the
    # password again, in a dialog over what is there; the command is not lost.
    ctx.clear_cookies()
    box.fill("echo after the new login")
    page.get_by_role("button", name="Run").click()
    dialog = page.get_by_role("dialog")
    expect(dialog, "Your session has ended")
    expect(page.locator(".command-form + .status"), "The command is still in the box")
    assert box.input_value() == "echo after the new login"
    screenshot(page, "session-ended")
    dialog.get_by_label("Password").fill(password)    # the user name is filled in
    dialog.get_by_role("button", name="Log in").click()
    dialog.wait_for(state="detached")
    page.get_by_role("button", name="Run").click()
    result = page.locator("article.cmd", has_text="after the new login")
    expect(result.locator(".stdout"), "after the new login")
    assert_only_origin(ctx)
    assert_no_page_errors(ctx, allowed=("Failed to load resource",))


def test_a_save_over_a_newer_revision_is_refused(site, db, device, start_agent, web):
    alice = site.operator()
    bob = site.operator()
    doc_id = "%d_shared" % device.macid
    code_doc(db, doc_id, device.macid, "shared", loop_code("version 1"), creator=alice[0])
    agent = start_agent(device)
    agent.wait_line(r"version 1 started")
    route = "#/device/%d/code/%s" % (device.macid, doc_id)
    ctx_a, page_a = open_page(web, site, *alice, hash_path=route)
    ctx_b, page_b = open_page(web, site, *bob, hash_path=route)
    for page in (page_a, page_b):
        expect(page.locator(".editor-panel .sub"), "revision 1")
    # Both edit; Alice saves first.
    set_editor_text(page_b, loop_code("bob's version"))
    set_editor_text(page_a, loop_code("alice's version"))
    page_a.get_by_role("button", name="Save").click()
    expect(page_a.locator(".editor-form .status"), "Saved")
    agent.wait_line(r"alice's version started")
    # Bob's page notices the newer revision; his save is refused, his text kept.
    expect(page_b.locator(".newer-notice"), "newer version")
    page_b.get_by_role("button", name="Save").click()
    expect(page_b.locator(".editor-form .status"), "Not saved")
    expect(page_b.locator(".editor-form .status"), "changed by someone else")
    assert "bob's version" in editor_text(page_b)
    assert "alice's version" in db.admin[doc_id]["code"]
    screenshot(page_b, "conflict-refused")
    # Bob takes Alice's version and saves on top of it: that works.
    page_b.get_by_role("button", name="Load their version (drops your edits)").click()
    wait_for(lambda: "alice's version" in editor_text(page_b),
             message="their version in the editor")
    set_editor_text(page_b, loop_code("bob on top of alice"))
    page_b.get_by_role("button", name="Save").click()
    expect(page_b.locator(".editor-form .status"), "Saved")
    assert "bob on top of alice" in db.admin[doc_id]["code"]
    for ctx in (ctx_a, ctx_b):
        assert_only_origin(ctx)
    assert_no_page_errors(ctx_b, allowed=("409", "Failed to load resource"))


# ------------------------------------------------------------------ issue 12, point 5
def two_minutes_ago():
    return email.utils.formatdate(time.time() - 130, usegmt=True)


def overlap(a, b):
    """True when the boxes (Playwright bounding boxes) share any area."""
    return not (a["x"] + a["width"] <= b["x"] or b["x"] + b["width"] <= a["x"] or
                a["y"] + a["height"] <= b["y"] or b["y"] + b["height"] <= a["y"])


def inside(inner, outer, slack=1):
    return (inner["x"] >= outer["x"] - slack and
            inner["x"] + inner["width"] <= outer["x"] + outer["width"] + slack)


def test_a_stopped_devices_badge_never_covers_its_macid(site, db, device, web):
    name, password = site.operator()
    db.admin.save({"_id": "%d_heartbeat" % device.macid, "type": "heartbeat",
                   "created_by": device.user, "macid": device.macid, "state": "stopped",
                   "heartbeat_interval": 10, "timestamp": two_minutes_ago(), "workers": []})
    ctx, page = open_page(web, site, name, password)
    badge = fleet_row(page, device.macid).locator("[data-alive]")
    expect(badge, "agent stopped")
    for width in (320, 390, 600, 768, 1024, 1280, 1600):
        page.set_viewport_size({"width": width, "height": 900})
        row = fleet_row(page, device.macid)
        box = row.locator("[data-alive]").bounding_box()
        cell = row.locator("td").first.bounding_box()
        macid = row.locator("th .sub").bounding_box()
        assert not overlap(box, macid), (width, box, macid)
        assert inside(box, cell), (width, box, cell)
    screenshot(page, "stopped-fleet")
    page.goto(site.url + "#/device/%d" % device.macid)
    facts = page.locator(".facts")
    expect(facts.locator("[data-alive]"), "agent stopped")
    for width in (320, 390, 600, 768, 1024, 1280, 1600):
        page.set_viewport_size({"width": width, "height": 900})
        box = facts.locator("[data-alive]").bounding_box()
        alive = facts.locator(".fact", has_text="Alive").locator("dd").bounding_box()
        macid = facts.locator(".fact", has_text="MacID").bounding_box()
        assert not overlap(box, macid), (width, box, macid)
        assert inside(box, alive), (width, box, alive)
    screenshot(page, "stopped-device")
    assert_only_origin(ctx)


def test_a_syntax_error_marks_the_line_the_worker_reported(site, db, device, start_agent, web):
    name, password = site.operator()
    start_agent(device)
    doc_id = "%d_typo" % device.macid
    code_doc(db, doc_id, device.macid, "typo", loop_code("fine"))
    ctx, page = open_page(web, site, name, password,
                          hash_path="#/device/%d/code/%s" % (device.macid, doc_id))
    expect(page.locator('[data-worker="%s"]' % doc_id), "running")
    set_editor_text(page, "import time\n\ndef main(:\n    pass\n")
    page.get_by_role("button", name="Save").click()
    expect(page.locator(".editor-form .status"), "Saved")
    reported = page.locator(".reported-error")
    expect(reported, "SyntaxError")
    expect(reported, "line 3 is marked")
    marked = page.locator(".cm-line.cm-reported")
    expect(marked, "def main(:")
    assert marked.count() == 1
    assert "main.py, line 3" in marked.get_attribute("title")
    screenshot(page, "syntax-error-marked")
    # Fixed and saved: the mark and the message go.
    set_editor_text(page, loop_code("fixed"))
    page.get_by_role("button", name="Save").click()
    expect(page.locator('[data-worker="%s"]' % doc_id), "running")
    reported.wait_for(state="detached", timeout=EXPECT_MS)
    assert page.locator(".cm-reported").count() == 0
    assert_only_origin(ctx)
    assert_no_page_errors(ctx, allowed=("Failed to load resource",))


def command_doc(macid, n, **fields):
    doc = {"_id": "%d_cmd_%02d" % (macid, n), "type": "%d_cmd" % macid,
           "cmd": ["echo", "number %02d" % n], "created_by": "admin",
           "created_at": "2026-11-26T23:%02d:00Z" % n}
    doc.update(fields)
    return doc


def test_commands_page_newest_first_and_a_queued_one_is_cancelled(site, db, device, web):
    name, password = site.operator()
    done = {"ret": ["", ""], "exit_code": 0, "claimed_at": "2026-11-26T23:59:00Z"}
    for n in range(1, 25):
        db.admin.save(command_doc(device.macid, n, **done))
    db.admin.save(command_doc(device.macid, 25))            # the newest, queued
    ctx, page = open_page(web, site, name, password, hash_path="#/device/%d" % device.macid)
    cards = page.locator("article.cmd")
    expect(cards.first, "number 25")
    assert cards.count() == 10
    assert [c.split()[-1].strip("'") for c in cards.locator(".cmdline").all_inner_texts()] == \
        ["%02d" % n for n in range(25, 15, -1)]
    older = page.get_by_role("button", name="Show older commands")
    older.click()
    expect(cards.nth(19), "number 06")
    assert cards.count() == 20
    older.click()                   # beyond what the page loaded at first
    expect(cards.nth(24), "number 01")
    older.wait_for(state="detached", timeout=EXPECT_MS)
    assert cards.count() == 25
    # Only the queued one can be cancelled; then no device ever runs it.
    assert page.get_by_role("button", name=re.compile("^Cancel ")).count() == 1
    page.get_by_role("button", name="Cancel echo 'number 25'").click()
    expect(cards.first.locator(".badge"), "cancelled")
    expect(cards.first, "cancelled by %s" % name)
    stored = db.admin["%d_cmd_25" % device.macid]
    assert stored["cancelled_by"] == name and stored["cancelled_at"].endswith("Z")
    assert page.get_by_role("button", name=re.compile("^Cancel ")).count() == 0
    screenshot(page, "commands-cancelled")
    assert_only_origin(ctx)
    assert_no_page_errors(ctx)


def test_names_tags_a_groups_page_and_a_rolled_back_worker(site, db, device, make_device,
                                                           start_agent, web):
    """Issue 13: devices by the names of their device documents, filtered by
    their tags; a group's page with its devices and its halted rollout; the
    canary's rolled-back worker with the error that caused it."""
    canary, other = device, make_device()
    for d, name in ((canary, "magnetometer-1"), (other, "magnetometer-2")):
        db.admin.save({"_id": "%d_device" % d.macid, "type": "device", "macid": d.macid,
                       "name": name, "tags": ["magnetometer"], "created_by": "admin"})
    group = {"_id": "grp", "type": "tag:magnetometer", "name": "field reader",
             "code": loop_code("v1"), "rollback": {"failures": 2, "within": 600, "healthy_for": 1},
             "created_by": "admin"}
    db.admin.save(group)
    agents = [start_agent(d, args=["--heartbeat-interval", "1"]) for d in (canary, other)]
    for agent in agents:
        agent.wait_line(r"\[field reader\] v1 started")
    wait_for(lambda: any(w.get("healthy") for w in (db.admin.get("%d_heartbeat" % canary.macid)
                                                     or {}).get("workers", [])),
             message="v1 healthy on the canary")
    group.update(code="def main():\n    raise RuntimeError('sensor gone')\n",
                 rollout={"canary": [str(canary.macid)], "healthy_for": 1})
    db.admin.save(group)
    agents[0].wait_line(r"rolling back to rev")
    name, password = site.operator()
    ctx, page = open_page(web, site, name, password, hash_path="#/?tag=magnetometer")
    expect(fleet_row(page, canary.macid), "magnetometer-1")
    expect(fleet_row(page, other.macid), "magnetometer-2")
    page.locator("a.group-link", has_text="field reader").click()
    view = page.locator(".group-view")
    expect(view.locator(".rollout-state"), "halted")
    row = view.locator('tr[data-device="%d"]' % canary.macid)
    expect(row, "canary")
    expect(row.locator(".rolled-back"), "sensor gone")
    expect(view.locator('tr[data-device="%d"]' % other.macid), "holding the new revision back: halted")
    screenshot(page, "group-halted")
    row.locator("a").first.click()
    expect(page.locator("h1"), "magnetometer-1")
    expect(page.locator(".workers .rolled-back"), "sensor gone")
    screenshot(page, "device-rolled-back")
    # A device opens by its name too.
    page.goto(site.url + "#/")
    page.locator("#open-device").fill("magnetometer-2")
    page.locator("#open-device").press("Enter")
    expect(page.locator("h1"), "magnetometer-2")
    expect(page.locator(".facts"), str(other.macid))
    assert_only_origin(ctx)
