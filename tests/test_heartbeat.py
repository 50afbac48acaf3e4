"""What the lab sees of a device: heartbeat and log documents, against the real server."""
import email.utils
import re
import signal
import urllib.parse

from couchserver import StallingProxy
from helpers import wait_for

RFC1123 = re.compile(r"^[A-Z][a-z]{2}, \d{2} [A-Z][a-z]{2} \d{4} \d{2}:\d{2}:\d{2} GMT$")

STAMP_HANDLER = """function (doc, req) {
  var body = JSON.parse(req.body);
  var key;
  if (!doc) { doc = {_id: req.id}; }
  for (key in body) { doc[key] = body[key]; }
  if (!doc.created_by) { doc.created_by = req.userCtx.name; }
  doc.timestamp = new Date().toUTCString();
  return [doc, JSON.stringify({ok: true})];
}"""


def heartbeat(db, device, predicate=lambda hb: True, timeout=20, message="heartbeat"):
    def check():
        hb = db.admin.get("%d_heartbeat" % device.macid)
        return hb if hb is not None and predicate(hb) else None
    return wait_for(check, timeout=timeout, message=message)


def worker_of(hb, doc_id):
    return next((w for w in hb["workers"] if w["doc_id"] == doc_id), None)


def test_heartbeat_shows_device_and_workers(db, device, start_agent):
    db.admin.save({"_id": "tick", "type": device.macid, "name": "ticker",
                   "code": "import time\ndef main():\n    while not should_quit():\n"
                           "        time.sleep(0.1)\n"})
    agent = start_agent(device)
    pid = agent.wait_worker("tick")
    hb = heartbeat(db, device, lambda hb: hb["running_ids"] == ["tick"],
                   message="heartbeat lists the running worker")
    assert hb["type"] == "heartbeat" and hb["created_by"] == device.user
    assert RFC1123.match(hb["timestamp"]) and email.utils.parsedate_to_datetime(hb["timestamp"])
    assert hb["timestamp_source"] == "device"          # this database has no handler
    assert hb["ip"] == "127.0.0.1"
    assert hb["macid"] == device.macid and hb["version"]
    for key in ("hostname", "uptime", "load", "memory_free_mb", "disk_free_mb",
                "cpu_temperature", "sent_at"):
        assert key in hb, key
    w = worker_of(hb, "tick")
    assert w["name"] == "ticker" and w["state"] == "running" and w["pid"] == pid
    assert w["restarts"] == 0 and w["rev"].startswith("1-") and w["started_at"].endswith("Z")
    hb = heartbeat(db, device, lambda hb: worker_of(hb, "tick")["cpu_percent"] is not None,
                   message="a later heartbeat measures the worker")
    assert worker_of(hb, "tick")["rss_mb"] > 1
    assert hb["feed"] == {"connected": True, "error": None}


def test_heartbeat_shows_a_crashed_workers_traceback(db, device, start_agent):
    db.admin.save({"_id": "bad", "type": device.macid, "name": "crasher",
                   "code": "def main():\n    log('about to fail')\n    {}['missing']\n"})
    start_agent(device)
    hb = heartbeat(db, device, lambda hb: (worker_of(hb, "bad") or {}).get("traceback"),
                   message="traceback in the heartbeat")
    w = worker_of(hb, "bad")
    assert w["state"] in ("backoff", "starting", "running")
    assert w["last_exit_code"] == 1
    assert w["error"] == "KeyError: 'missing'"
    assert 'main.py", line 3, in main' in w["traceback"]
    assert "bad" not in hb["running_ids"]


def test_bad_document_is_fatal_in_the_heartbeat(db, device, start_agent):
    db.admin.save({"_id": "broken", "type": device.macid, "name": "broken",
                   "code": "def main(:\n"})
    start_agent(device)
    hb = heartbeat(db, device, lambda hb: (worker_of(hb, "broken") or {}).get("state") == "fatal",
                   message="fatal worker in the heartbeat")
    assert "SyntaxError" in worker_of(hb, "broken")["error"]


def test_heartbeat_uses_the_servers_clock_through_an_update_handler(db, device, start_agent):
    db.admin.save({"_id": "_design/himbeerecouch",
                   "updates": {"insert_with_timestamp": STAMP_HANDLER}})
    agent = start_agent(device)
    hb = heartbeat(db, device, lambda hb: hb.get("timestamp_source") == "server")
    assert RFC1123.match(hb["timestamp"]) and hb["created_by"] == device.user
    agent.wait_line(r"heartbeat timestamps come from the server \(_design/himbeerecouch\)")


def test_heartbeat_survives_a_conflicting_writer(db, device, start_agent):
    agent = start_agent(device)
    hb = heartbeat(db, device)
    hb["note"] = "an operator touched this"
    db.admin.save(hb)
    db.admin.save({"_id": "new", "type": device.macid, "name": "new",
                   "code": "import time\ndef main():\n    while not should_quit():\n"
                           "        time.sleep(0.1)\n"})
    hb = heartbeat(db, device, lambda hb: "new" in hb["running_ids"],
                   message="heartbeat written after a conflict")
    assert hb["note"] == "an operator touched this"
    assert agent.proc.poll() is None


def test_log_documents_keep_the_last_lines(db, device, start_agent):
    db.admin.save({"_id": "chatty", "type": device.macid, "name": "chatty", "restart": "never",
                   "code": "import sys\ndef main():\n    for i in range(300):\n"
                           "        log('line', i)\n    print('to stderr', file=sys.stderr)\n"})
    start_agent(device)
    doc_id = "%d_log_chatty" % device.macid
    logdoc = wait_for(lambda: (lambda d: d if d and any("to stderr" in l[2] for l in d["lines"])
                               else None)(db.admin.get(doc_id)), timeout=20,
                      message="log document with the last lines")
    assert logdoc["type"] == "%d_log" % device.macid and logdoc["created_by"] == device.user
    assert logdoc["name"] == "chatty" and logdoc["doc_id"] == "chatty"
    assert len(logdoc["lines"]) == 200
    texts = [line[2] for line in logdoc["lines"]]
    assert "line 299" in texts and "line 50" not in texts
    assert ["stderr", "to stderr"] in [line[1:] for line in logdoc["lines"]]


def test_logs_survive_a_server_outage(db, device, start_agent):
    db.admin.save({"_id": "pr", "type": device.macid, "name": "printer",
                   "code": "import time\ndef main():\n    i = 0\n    while not should_quit():\n"
                           "        i += 1\n        log('n', i)\n        time.sleep(0.2)\n"})
    port = urllib.parse.urlsplit(db.url).port
    doc_id = "%d_log_pr" % device.macid
    with StallingProxy(port) as proxy:
        agent = start_agent(device, url=proxy.url)
        wait_for(lambda: db.admin.get(doc_id), timeout=20, message="first log document")
        proxy.stall()
        proxy.drop()
        agent.wait_line(r"database unreachable", timeout=20)
        printed_during = agent.wait_line(r"\[printer\] n \d+", after=agent.mark())
        number = printed_during.rsplit(" ", 1)[1]
        assert not any(l[2] == "n " + number for l in db.admin[doc_id]["lines"])
        proxy.resume()
        wait_for(lambda: any(l[2] == "n " + number for l in db.admin[doc_id]["lines"]),
                 timeout=30, message="lines printed during the outage reach the database")
        assert agent.proc.poll() is None


def test_sigusr1_prints_every_stack_labelled(db, device, start_agent):
    db.admin.save({"_id": "sl", "type": device.macid, "name": "sleeper",
                   "code": "import time\ndef snooze():\n    while not should_quit():\n"
                           "        time.sleep(0.05)\ndef main():\n    snooze()\n"})
    agent = start_agent(device)
    agent.wait_worker("sl")
    heartbeat(db, device, lambda hb: hb["running_ids"] == ["sl"])
    mark = agent.mark()
    agent.signal(signal.SIGUSR1)
    agent.wait_line(r"\[himbeerecouch\] stack of thread \d+: .*in run", after=mark)
    agent.wait_line(r"\[sleeper\] .*in snooze", after=mark)
    assert agent.proc.poll() is None and agent.worker("sl") is not None


def test_an_outage_is_one_line_when_it_starts_and_one_when_it_ends(db, device, start_agent):
    """Not a line per retry (issue 12, point 3): the proxy refuses connections for
    a while, during which the agent retries every second (heartbeat interval 1 s)
    while a worker prints, so heartbeat and log writes both keep failing."""
    db.admin.save({"_id": "pr", "type": device.macid, "name": "printer",
                   "code": "import time\ndef main():\n    while not should_quit():\n"
                           "        log('tick')\n        time.sleep(0.2)\n"})
    port = urllib.parse.urlsplit(db.url).port
    proxy = StallingProxy(port).start()
    try:
        agent = start_agent(device, url=proxy.url, args=["--heartbeat-interval", "1"])
        wait_for(lambda: db.admin.get("%d_log_pr" % device.macid), timeout=20,
                 message="first log document")
        mark = agent.mark()
        proxy.stop()                    # connections refused from now on
        agent.wait_line(r"cannot write the heartbeat and logs to the database", after=mark,
                        timeout=20)
        before = db.admin["%d_heartbeat" % device.macid]["uptime"]
        # Eight seconds of refused writes: eight heartbeats and a log write or two.
        wait_for(lambda: len(agent.find_lines(r"\[printer\] tick", after=mark)) >= 40,
                 timeout=30, message="eight seconds of outage")
        proxy.start()                   # the same port again
        agent.wait_line(r"writing the heartbeat and logs to the database works again",
                        after=mark, timeout=30)
        wait_for(lambda: db.admin["%d_heartbeat" % device.macid]["uptime"] > before + 5,
                 timeout=20, message="heartbeats again")
        said = agent.find_lines(r"\[himbeerecouch\].*(heartbeat|log documents)", after=mark)
        assert len(said) == 2, said
    finally:
        proxy.stop()
