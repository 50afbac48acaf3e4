"""The page's history plots, state timelines, log search and fleet list, in Chromium.

Against the real test server and the real agent, as tests/test_web.py (whose
fixtures these tests share).  Screenshots of every view land in
tests/screenshots/ (not committed).
"""
import email.utils
import time

from helpers import random_macid, wait_for
from test_web import EXPECT_MS, browser, expect, fleet_row, site, web  # noqa: F401 (fixtures)
from web_helpers import PHONE, assert_no_page_errors, assert_only_origin, open_page, screenshot

CRASHER = ("def main():\n"
           "    log('crashing on purpose')\n"
           "    raise SystemExit(3)\n")
STEADY = ("import time\n"
          "def main():\n"
          "    log('steady as she goes')\n"
          "    while not should_quit():\n"
          "        time.sleep(0.2)\n")


def seed_history(db, device, minutes_ago, load):
    """The minute ring as an earlier run of the agent left it: one sample
    ``minutes_ago`` old, nothing since (the agent was not running)."""
    step, slots = 60, 1440
    last = int(time.time() // step) - minutes_ago
    values = [None] * slots
    values[-1] = load
    db.admin.save({"_id": "%d_history_1m" % device.macid, "type": "%d_history" % device.macid,
                   "created_by": device.user, "tier": "1m", "step": step, "slots": slots,
                   "start": (last - slots + 1) * step,
                   "series": {"load": values, "memory_free_mb": values},
                   "online": values[:-1] + [1], "workers": {}})


def history_with(db, device, predicate, timeout=EXPECT_MS / 1000):
    def check():
        doc = db.admin.get("%d_history_1m" % device.macid)
        return doc if doc and doc.get("updated_at") and predicate(doc) else None
    return wait_for(check, timeout=timeout, interval=0.5, message="the agent's history")


def points(page, plot):
    return int(page.locator('figure[data-plot="%s"]' % plot).get_attribute("data-points"))


def test_history_plots_the_agents_points_a_gap_and_timelines(site, db, device, start_agent, web):
    name, password = site.operator()
    seed_history(db, device, minutes_ago=30, load=7.5)
    db.admin.save({"_id": "crash", "type": device.macid, "name": "crasher", "code": CRASHER,
                   "created_by": "admin"})
    db.admin.save({"_id": "steady", "type": device.macid, "name": "steady", "code": STEADY,
                   "created_by": "admin"})
    start_agent(device)
    history_with(db, device, lambda d: d["series"]["load"][-1] is not None)

    ctx, page = open_page(web, site, name, password, hash_path="#/device/%d" % device.macid)
    load = page.locator('figure[data-plot="load"]')
    expect(load.locator("canvas").first)
    # The seeded sample and the agent's own: at least two points in 24 h.
    wait_for(lambda: points(page, "load") >= 2, timeout=EXPECT_MS / 1000,
             message="the load plot shows the agent's points")
    for plot in ("temperature", "memory", "restarts"):
        expect(page.locator('figure[data-plot="%s"]' % plot))
    # The 30 minutes without the agent: a silent period, said in words too.
    expect(page.locator('#history-gaps li[data-gap="silent"]'), "Silent from")
    screenshot(page, "history-24h")

    # The range is a choice in the URL.
    page.get_by_role("button", name="1 hour").click()
    expect(page.locator('.history[data-range="1h"]'))
    assert page.url.endswith("?range=1h"), page.url
    wait_for(lambda: points(page, "load") >= 2, timeout=5, message="both points within 1 h")
    screenshot(page, "history-1h")
    page.get_by_role("button", name="30 days").click()
    expect(page.locator('.history[data-range="30d"]'))
    assert "range=30d" in page.url
    wait_for(lambda: points(page, "load") >= 1, timeout=EXPECT_MS / 1000,
             message="the 15-minute ring in the 30-day range")
    screenshot(page, "history-30d")

    # A minute later the agent writes again: the crashing worker's timeline
    # shows its backoff, the steady one runs.
    history_with(db, device, lambda d: "B" in d["workers"].get("crash", {}).get("states", "")
                 and "R" in d["workers"].get("steady", {}).get("states", ""), timeout=90)
    page.get_by_role("button", name="24 hours").click()
    page.reload()
    expect(page.locator('[data-timeline="crash"] rect[data-state="backoff"]').first)
    expect(page.locator('[data-timeline="steady"] rect[data-state="running"]').first)
    wait_for(lambda: points(page, "restarts") >= 1, timeout=EXPECT_MS / 1000,
             message="restarts plotted")

    # The log: a search finds a line (the archive is searched too).
    search = page.locator('input[data-log-search="crash"]')
    search.fill("on purpose")
    found = page.locator('[data-log-found="crash"]')
    expect(found, "crashing on purpose")
    expect(found, "1 archived day searched")
    search.fill("no such line anywhere")
    expect(found, "0 of")
    with page.expect_download() as download:
        page.locator('button[data-log-download="steady"]').click()
    text = open(download.value.path(), encoding="utf-8").read()
    assert "stdout steady as she goes" in text
    screenshot(page, "history-timelines-and-log-search")

    # Phone width: the plots fit, nothing cut off sideways.
    page.set_viewport_size(PHONE)
    expect(page.locator('figure[data-plot="load"] canvas').first)
    width = page.evaluate("document.documentElement.scrollWidth")
    assert width <= PHONE["width"], width
    screenshot(page, "history-phone")
    assert_only_origin(ctx)
    assert_no_page_errors(ctx, allowed=("401", "Failed to load resource"))


def fake_heartbeat(macid, hostname, age, temperature, workers):
    """A device's heartbeat as an agent writes it (an admin may write any document)."""
    return {"_id": "%d_heartbeat" % macid, "type": "heartbeat", "created_by": str(macid),
            "hostname": hostname, "ip": "127.0.0.1", "heartbeat_interval": 10,
            "timestamp": email.utils.formatdate(time.time() - age, usegmt=True),
            "cpu_temperature": temperature, "load": [0.5, 0.4, 0.3],
            "workers": [{"doc_id": "%d_%s" % (macid, n), "name": n, "state": s, "restarts": 0}
                        for n, s in workers],
            "running_ids": []}


def shown_devices(page):
    return page.locator("table.fleet tbody tr").evaluate_all(
        "rows => rows.map(r => r.dataset.device)")


def test_fleet_list_of_200_devices_search_filter_sort_from_the_url(
        site, db, device, start_agent, web):
    name, password = site.operator()
    # The one real device: a crashing worker, tagged "hall B".
    db.admin.save({"_id": "crash", "type": device.macid, "name": "crasher", "code": CRASHER,
                   "created_by": "admin", "tags": ["hall B"]})
    start_agent(device)
    # 199 more: most of them steady, some silent, one with a fatal worker, one hot.
    fatal, hot, silent = random_macid(), random_macid(), random_macid()
    docs = [fake_heartbeat(fatal, "pi-fatal", 2, 45.0, [("broken", "fatal")]),
            fake_heartbeat(hot, "pi-hot", 2, 81.5, [("heater", "running")]),
            fake_heartbeat(silent, "pi-silent", 3600, 40.0, [("logger", "running")]),
            {"_id": "%d_heater" % hot, "type": hot, "name": "heater", "created_by": "admin",
             "code": "def main(): pass", "tags": ["hall B", "cryo"]}]
    for n in range(196):
        docs.append(fake_heartbeat(random_macid(), "pi-%03d" % n, 2, 40.0 + n % 30,
                                   [("thermometer", "running"), ("camera", "stopped")]))
    assert all(ok for ok, _, _ in db.admin.update(docs))
    wait_for(lambda: "backoff" in str(db.admin.get("%d_heartbeat" % device.macid)),
             timeout=EXPECT_MS / 1000, message="the crashing worker in the heartbeat")

    ctx, page = open_page(web, site, name, password, hash_path="#/?show=failing")
    # "failing": exactly the devices with a crashing or fatal worker.
    expect(page.locator("#fleet-shown"), "2 of 200 devices shown")
    wait_for(lambda: sorted(shown_devices(page)) == sorted([str(device.macid), str(fatal)]),
             timeout=EXPECT_MS / 1000, message="the failing devices")
    expect(fleet_row(page, device.macid), "crasher")
    assert page.locator("#fleet-show").input_value() == "failing"
    screenshot(page, "fleet-failing")

    # Silent ones, from a link.
    page.goto(site.url + "#/?show=silent")
    expect(page.locator("#fleet-shown"), "1 of 200 devices shown")
    assert shown_devices(page) == [str(silent)]

    # Search by script name, typed: the choice goes into the URL.
    page.goto(site.url + "#/")
    expect(page.locator("#fleet-shown"), "200 devices")
    page.get_by_label("Search devices, scripts, tags").fill("heater")
    expect(page.locator("#fleet-shown"), "1 of 200 devices shown")
    assert shown_devices(page) == [str(hot)]
    assert "q=heater" in page.url
    # By tag (the tags of a device's code documents), and sorted hottest first.
    page.goto(site.url + "#/?tag=hall%20B&sort=temperature")
    expect(page.locator("#fleet-shown"), "2 of 200 devices shown")
    assert shown_devices(page) == [str(hot), str(device.macid)]
    assert page.locator("#fleet-tag").input_value() == "hall B"
    page.locator("#fleet-sort").select_option("name")
    assert "sort=" not in page.url          # the default is left out of the link
    mine = db.admin.get("%d_heartbeat" % device.macid)["hostname"]
    by_name = [m for _, m in sorted([(mine.lower(), str(device.macid)), ("pi-hot", str(hot))])]
    wait_for(lambda: shown_devices(page) == by_name, timeout=5, message="sorted by name")
    screenshot(page, "fleet-tag-sorted")
    # Sort the whole fleet: the hottest first.
    page.goto(site.url + "#/?sort=temperature")
    expect(page.locator("#fleet-shown"), "200 devices")
    assert shown_devices(page)[0] == str(hot)

    page.set_viewport_size(PHONE)
    page.goto(site.url + "#/?q=pi-hot")
    expect(fleet_row(page, hot), "heater")
    width = page.evaluate("document.documentElement.scrollWidth")
    assert width <= PHONE["width"], width
    screenshot(page, "fleet-search-phone")
    assert_only_origin(ctx)
    assert_no_page_errors(ctx, allowed=("401", "Failed to load resource"))
