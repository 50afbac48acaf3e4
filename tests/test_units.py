"""Fast unit tests of the supervisor's pure parts (no server, no workers).

documents (what runs), worker (states and restart policy), config (where
settings come from), output (bounded lines) and cache (the offline copy of
the documents).
"""
import json
import os
import subprocess
import sys
import textwrap

import pytest

from himbeerecouch import config
from himbeerecouch.agent import cache
from himbeerecouch.documents import is_code_document, wanted_workers, worker_spec
from himbeerecouch.agent.output import LineSplitter
from himbeerecouch.agent.worker import (ALLOWED, EX_CONFIG, State, TransitionError, Worker,
                                  after_exit, backoff_delay)

MACID = 202481587074134
NO_LIMITS = {"memory_mb": None, "cpu_seconds": None, "nofile": None}


def doc(doc_id, rev="1-a", **fields):
    d = {"_id": doc_id, "_rev": rev, "type": MACID}
    d.update(fields)
    return d


def wanted(*docs, limits=NO_LIMITS):
    warnings = []
    specs = wanted_workers({d["_id"]: d for d in docs}, limits,
                           lambda doc_id, text: warnings.append((doc_id, text)))
    return specs, warnings


# ------------------------------------------------------------------ documents
class TestDocuments:
    def test_type_matches_int_and_digits_only(self):
        assert is_code_document({"type": MACID}, MACID)
        assert is_code_document({"type": str(MACID)}, MACID)
        for other in (MACID + 1, str(MACID + 1), [MACID], {"id": MACID}, None, "",
                      " %d" % MACID, "%d_cmd" % MACID, "heartbeat"):
            assert not is_code_document({"type": other}, MACID), other
        assert not is_code_document({}, MACID)

    def test_bool_is_not_a_device_id(self):
        # True == 1 in Python: device 1 must not take documents of type true.
        assert not is_code_document({"type": True}, 1)
        assert not is_code_document({"type": False}, 0)
        assert is_code_document({"type": 1}, 1)

    def test_global_modules_merged_and_own_modules_shadow_them(self):
        specs, warnings = wanted(
            doc("g1", global_modules={"shared": "A = 1\n", "util": "U = 1\n"}),
            doc("g2", global_modules={"other": "O = 1\n"}),
            doc("user", code="def main(): pass\n", modules={"helper": "H = 1\n"}),
            doc("shadow", code="def main(): pass\n", modules={"shared": "A = 'own'\n"}))
        assert set(specs) == {"user", "shadow"}      # the exporters have no main
        assert specs["user"].modules == {"shared": "A = 1\n", "util": "U = 1\n",
                                         "other": "O = 1\n", "helper": "H = 1\n",
                                         "main": "def main(): pass\n"}
        assert specs["shadow"].modules["shared"] == "A = 'own'\n"
        assert not warnings
        assert all(s.error is None for s in specs.values())

    def test_main_module_from_modules_and_code_wins(self):
        specs, _ = wanted(doc("m", modules={"main": "def main(): pass\n"}),
                          doc("both", code="CODE\n", modules={"main": "MOD\n"}))
        assert specs["m"].modules["main"] == "def main(): pass\n"
        assert specs["both"].modules["main"] == "CODE\n"
        assert specs["both"].warnings

    def test_global_module_clash_first_document_wins_and_is_reported(self):
        specs, warnings = wanted(doc("a", global_modules={"shared": "A\n"}),
                                 doc("b", global_modules={"shared": "B\n"}),
                                 doc("w", code="W\n"))
        assert specs["w"].modules["shared"] == "A\n"
        assert [w[0] for w in warnings] == ["b"]

    def test_name_defaults_to_id_and_is_one_line(self):
        specs, _ = wanted(doc("x", code="C\n"), doc("y", name="  two\nlines\t", code="C\n"),
                          doc("z", name=42, code="C\n"))
        assert specs["x"].name == "x" and specs["z"].name == "z"
        assert specs["y"].name == "two lines"

    @pytest.mark.parametrize("fields, words", [
        ({"code": 42}, "'code' must be a string"),
        ({"code": "C\n", "modules": ["helper"]}, "'modules' must be an object"),
        ({"code": "C\n", "modules": {"../x": "x\n"}}, "not a Python identifier"),
        ({"code": "C\n", "modules": {"os": "x\n"}}, "standard library"),
        ({"code": "C\n", "modules": {"__init__": "x\n"}}, "underscore"),
        ({"code": "C\n", "modules": {"helper": 3}}, "must be a string"),
        ({"code": "#" + "x" * (2 * 1024 * 1024)}, "bytes of source"),
        ({"code": "C\n", "limits": {"memory_mb": "lots"}}, "positive number"),
        ({"code": "C\n", "limits": {"memory_mb": True}}, "positive number"),
        ({"code": "C\n", "limits": {"memory_mb": -1}}, "positive number"),
        ({"code": "C\n", "limits": {"disk": 1}}, "unknown limit"),
        ({"code": "C\n", "limits": {"memory_mb": 0.5}}, "between 1 and"),
        ({"code": "C\n", "limits": {"nofile": 1e30}}, "between 1 and"),
        ({"code": "C\n", "limits": {"cpu_seconds": 10 ** 30}}, "between 1 and"),
        ({"code": "C\n", "limits": [1]}, "'limits' must be an object"),
        ({"code": "C\n", "restart": "sometimes"}, "'restart' must be one of"),
    ])
    def test_bad_documents_get_an_error(self, fields, words):
        specs, _ = wanted(doc("bad", **fields), doc("good", code="G\n"))
        assert specs["bad"].error and words in specs["bad"].error, specs["bad"].error
        assert specs["bad"].modules == {}
        assert specs["good"].error is None      # a bad document harms no other

    def test_bad_global_modules_are_ignored_not_fatal(self):
        specs, warnings = wanted(doc("g", global_modules={"os": "x\n"}),
                                 doc("w", code="W\n"))
        assert specs["w"].error is None and "os" not in specs["w"].modules
        assert warnings and warnings[0][0] == "g"

    def test_document_without_main_runs_nothing(self):
        specs, _ = wanted(doc("n", modules={"helper": "H\n"}), doc("e"))
        assert specs == {}

    def test_limits_document_over_defaults(self):
        defaults = {"memory_mb": 100, "cpu_seconds": None, "nofile": 50}
        specs, _ = wanted(doc("d", code="C\n"),
                          doc("own", code="C\n", limits={"memory_mb": 64.0, "nofile": None}),
                          limits=defaults)
        assert specs["d"].limits == defaults
        assert specs["own"].limits == {"memory_mb": 64, "cpu_seconds": None, "nofile": 50}

    def test_fingerprint_changes_exactly_when_a_restart_is_needed(self):
        base = dict(name="n", code="C\n", modules={"h": "H\n"}, restart="on-failure")
        glob = doc("g", global_modules={"shared": "S\n"})

        def fp(d, g=glob, limits=NO_LIMITS):
            return wanted(d, g, limits=limits)[0][d["_id"]].fingerprint

        ref = fp(doc("w", **base))
        # Not a reason to restart: a new revision with the same content, the
        # restart policy (read at the next exit), keys this agent does not use.
        assert fp(doc("w", rev="2-b", **base)) == ref
        assert fp(doc("w", **dict(base, restart="always"))) == ref
        assert fp(doc("w", comment="edited in the web page", **base)) == ref
        assert fp(doc("w", **base), g=doc("g", rev="9-z", name="renamed",
                                            global_modules={"shared": "S\n"})) == ref
        # Reasons to restart: anything the worker is started with.
        changed = [
            fp(doc("w", **dict(base, code="C2\n"))),
            fp(doc("w", **dict(base, name="n2"))),
            fp(doc("w", **dict(base, modules={"h": "H2\n"}))),
            fp(doc("w", **dict(base, modules={"h": "H\n", "k": "K\n"}))),
            fp(doc("w", **dict(base, limits={"nofile": 10}))),
            fp(doc("w", **base), g=doc("g", global_modules={"shared": "S2\n"})),
            fp(doc("w", **base), g=doc("g", global_modules={"shared": "S\n", "x": "X\n"})),
            fp(doc("w", **base), limits=dict(NO_LIMITS, memory_mb=10)),
            fp(doc("w", **dict(base, code=7))),          # now a bad document
        ]
        assert ref not in changed
        assert len(set(changed)) == len(changed)

    def test_shadowed_global_change_does_not_touch_the_shadowing_document(self):
        own = doc("w", code="C\n", modules={"shared": "mine\n"})
        a = wanted(own, doc("g", global_modules={"shared": "S1\n"}))[0]["w"].fingerprint
        b = wanted(own, doc("g", global_modules={"shared": "S2\n"}))[0]["w"].fingerprint
        assert a == b

    def test_worker_spec_of_a_document_with_odd_unicode(self):
        spec = worker_spec(doc("u", name="Temperatür \ud800", code="X = '\ud800'\n"), {},
                           NO_LIMITS)
        assert spec.error is None
        assert spec.fingerprint        # lone surrogates (valid JSON) do not break it


# ------------------------------------------------------------------ worker
class TestWorker:
    @pytest.mark.parametrize("policy, code, state", [
        ("on-failure", 0, State.EXITED),
        ("on-failure", 1, State.BACKOFF),
        ("on-failure", 3, State.BACKOFF),
        ("on-failure", -11, State.BACKOFF),
        ("on-failure", -9, State.BACKOFF),
        ("always", 0, State.BACKOFF),
        ("always", 1, State.BACKOFF),
        ("always", -15, State.BACKOFF),
        ("never", 0, State.EXITED),
        ("never", 2, State.EXITED),
        ("never", -11, State.EXITED),
        ("on-failure", EX_CONFIG, State.FATAL),
        ("always", EX_CONFIG, State.FATAL),
        ("never", EX_CONFIG, State.FATAL),
    ])
    def test_after_exit(self, policy, code, state):
        assert after_exit(policy, code) == state

    def test_backoff_delay_doubles_up_to_a_minute(self):
        assert [backoff_delay(n) for n in range(1, 10)] == [1, 2, 4, 8, 16, 32, 60, 60, 60]
        assert backoff_delay(0) == 1
        assert backoff_delay(10 ** 6) == 60       # no overflow, never gives up

    def make(self):
        spec = wanted(doc("w", code="C\n"))[0]["w"]
        return Worker(spec)

    def test_the_diagram_is_followed(self):
        w = self.make()
        for state in (State.STARTING, State.RUNNING, State.STOPPING, State.STOPPED,
                      State.STARTING, State.BACKOFF, State.STARTING, State.EXITED,
                      State.STARTING, State.FATAL, State.STARTING, State.RUNNING,
                      State.BACKOFF, State.STOPPED, State.FATAL, State.STOPPED):
            w.transition(state, "test")
            assert w.state == state

    @pytest.mark.parametrize("start, new", [
        (State.STOPPED, State.RUNNING),
        (State.STOPPED, State.STOPPING),
        (State.STOPPED, State.EXITED),
        (State.STOPPED, State.BACKOFF),
        (State.STOPPING, State.STARTING),
        (State.STOPPING, State.RUNNING),
        (State.STOPPING, State.BACKOFF),
        (State.EXITED, State.RUNNING),
        (State.BACKOFF, State.RUNNING),
        (State.FATAL, State.RUNNING),
        (State.RUNNING, State.STARTING),
        (State.RUNNING, State.STOPPED),
    ])
    def test_forbidden_transitions_raise(self, start, new):
        w = self.make()
        w.state = start
        with pytest.raises(TransitionError, match="%s -> %s" % (start.name, new.name)):
            w.transition(new)
        assert w.state == start

    def test_every_state_has_a_way_on(self):
        for state in State:
            assert ALLOWED[state], state
            for target in ALLOWED[state]:
                assert isinstance(target, State)

    def test_snapshot(self):
        w = self.make()
        snap = w.snapshot()
        assert snap["doc_id"] == "w" and snap["state"] == "stopped" and snap["pid"] is None
        json.dumps(snap)
        w.record_traceback("\n".join("line %d" % i for i in range(100)))
        assert w.last_traceback.splitlines()[-1] == "line 99"
        assert len(w.last_traceback.splitlines()) == 30


# ------------------------------------------------------------------ config
class TestConfig:
    def files(self, tmp_path, text=None, server=None):
        conf = tmp_path / "himbeerecouch.conf"
        if text is not None:
            conf.write_text(textwrap.dedent(text))
        server_file = tmp_path / "server"
        if server is not None:
            server_file.write_text(server + "\n")
        return {"config_file": str(conf), "server_file": str(server_file)}

    def test_defaults(self, tmp_path):
        c = config.load(self.files(tmp_path))
        assert c.server is None and c.database == "nedm/raspberries"
        assert c.stop_timeout == 20 and c.feed_heartbeat == 5
        assert c.state_dir == "/var/lib/himbeerecouch"
        assert c.default_limits == NO_LIMITS

    def test_file_then_command_line(self, tmp_path):
        files = self.files(tmp_path, """
            [himbeerecouch]
            stop_timeout = 30
            database = lab/db
            memory_mb = 128
            feed-heartbeat = 2
            """, server="http://file.example:5984/")
        c = config.load(files)
        assert (c.stop_timeout, c.database, c.memory_mb, c.feed_heartbeat) == (30, "lab/db", 128, 2)
        assert c.server == "http://file.example:5984"        # from the server file
        c = config.load(dict(files, stop_timeout=5.0, server="http://cli.example:5984",
                             database=None))
        assert c.stop_timeout == 5 and c.server == "http://cli.example:5984"
        assert c.database == "lab/db"       # None on the command line means "not given"
        assert c.memory_mb == 128

    def test_server_in_the_config_file_beats_the_server_file(self, tmp_path):
        files = self.files(tmp_path, "[himbeerecouch]\nserver = http://conf:1\n",
                           server="http://file:2")
        assert config.load(files).server == "http://conf:1"

    def test_file_without_our_section_is_fine(self, tmp_path):
        c = config.load(self.files(tmp_path, "[other]\nx = 1\n"))
        assert c.stop_timeout == 20

    @pytest.mark.parametrize("text, words", [
        ("stop_timeout = soon", "stop_timeout: 'soon' is not a valid float"),
        ("stop_timeout = -1", "stop_timeout: must not be negative"),
        ("stop_timeout = nan", "stop_timeout"),
        ("memory_mb = 1.5", "memory_mb: '1.5' is not a valid int"),
        ("memory_mb = 0", "memory_mb: must be positive"),
        ("nofile = 0", "nofile: must be positive"),
        ("nofile = 100000000000000000000", "nofile: must be at most"),
        ("feed_heartbeat = 0", "feed_heartbeat: must be positive"),
        ("heartbeat_interval = 0", "heartbeat_interval: must be positive"),
        ("answer_discovery = maybe", "answer_discovery"),
        ("discovery_legacy_password = perhaps", "discovery_legacy_password"),
        ("colour = blue", "unknown setting 'colour'"),
        ("server = ftp://x", "server URL must look like http://host:5984"),
        ("server = http://u:secret@host:notaport", "port"),
        ("database =", "database: must not be empty"),
    ])
    def test_bad_values_say_which_and_why(self, tmp_path, text, words):
        files = self.files(tmp_path, "[himbeerecouch]\n%s\n" % text)
        with pytest.raises(config.ConfigError) as info:
            config.load(files)
        assert words in str(info.value)
        assert "secret" not in str(info.value)

    def test_login_is_one_of_three(self, tmp_path):
        files = self.files(tmp_path, "[himbeerecouch]\nlogin = maybe\n")
        with pytest.raises(config.ConfigError, match="login: 'maybe' is not one of auto, "
                                                     "secret, legacy"):
            config.load(files)
        defaults = config.load(self.files(tmp_path, ""))
        assert defaults.login == "auto" and defaults.answer_discovery is True
        assert defaults.discovery_legacy_password is False and defaults.secret_file is None

    def test_bad_command_line_values(self, tmp_path):
        files = self.files(tmp_path)
        with pytest.raises(config.ConfigError, match="stop_timeout"):
            config.load(dict(files, stop_timeout="x"))
        with pytest.raises(config.ConfigError, match="unknown settings: bogus"):
            config.load(dict(files, bogus=1))
        with pytest.raises(config.ConfigError, match="server URL") as info:
            config.load(dict(files, server="host:5984"))

    def test_unreadable_config_file(self, tmp_path):
        files = self.files(tmp_path, "no section header\n")
        with pytest.raises(config.ConfigError, match="cannot read configuration file"):
            config.load(files)

    @pytest.mark.parametrize("url, shown", [
        ("http://u:pw@h:5984", "http://u:***@h:5984"),
        ("http://u:pw@h", "http://u:***@h"),
        ("https://u:p%40ss@h:1/db?x=1", "https://u:***@h:1/db?x=1"),
        ("http://u:p@ss@h:1/", "http://u:***@h:1/"),
        ("http://u:pw@[::1]:5984/", "http://u:***@[::1]:5984/"),
        ("http://h:5984", "http://h:5984"),
        ("http://u@h:5984", "http://u@h:5984"),
    ])
    def test_redact_hides_passwords(self, url, shown):
        assert config.redact(url) == shown

    def test_redact_never_fails(self):
        for url in ("http://u:secret@h:notaport/", "http://u:secret@[::1/", ""):
            shown = config.redact(url)
            assert "secret" not in shown


# ------------------------------------------------------------------ output
class TestLineSplitter:
    def test_lines_across_chunks(self):
        s = LineSplitter()
        assert s.feed(b"hel") == []
        assert s.feed(b"lo\nwor") == ["hello"]
        assert s.feed(b"ld\n\nlast") == ["world", ""]
        assert s.flush() == ["last"]
        assert s.flush() == []

    def test_crlf_and_bad_utf8(self):
        s = LineSplitter()
        assert s.feed(b"a\r\n\xff\xfe b\n") == ["a", "\ufffd\ufffd b"]
        # A multi-byte character split between two reads stays whole.
        text = "Temperatür".encode("utf-8")
        assert s.feed(text[:9]) == [] and s.feed(text[9:] + b"\n") == ["Temperatür"]

    def test_long_line_is_cut_with_a_marker(self):
        s = LineSplitter(max_line=100)
        assert s.feed(b"x" * 250 + b"\nnext\n") == ["x" * 100 + " [... 150 more bytes cut]",
                                                   "next"]

    def test_endless_line_keeps_memory_bounded(self):
        s = LineSplitter(max_line=1000)
        chunk = b"y" * 65536
        for _ in range(200):           # 13 MB without a newline
            assert s.feed(chunk) == []
            assert len(s._partial) <= 1000
        lines = s.feed(b"end\n")
        assert lines == ["y" * 1000 + " [... %d more bytes cut]" % (200 * 65536 + 3 - 1000)]
        assert s.feed(b"ok\n") == ["ok"]          # the next line is whole again

    def test_cut_unfinished_line_at_end_of_stream(self):
        s = LineSplitter(max_line=10)
        s.feed(b"z" * 15)
        assert s.flush() == ["z" * 10 + " [... 5 more bytes cut]"]


# ------------------------------------------------------------------ cache
DOCS = {"a": {"_id": "a", "_rev": "1-x", "type": MACID, "code": "def main(): pass\n",
              "name": "Temperatür \u2603"},
        "b": {"_id": "b", "_rev": "3-y", "type": str(MACID), "modules": {"m": "M = 1\n"}}}


class TestCache:
    def test_round_trip(self, tmp_path):
        path = cache.cache_path(str(tmp_path), MACID)
        assert cache.load(path, MACID, "db") is None            # none yet
        assert cache.save(path, MACID, "db", DOCS)
        assert cache.load(path, MACID, "db") == DOCS
        assert os.stat(path).st_mode & 0o777 == 0o600         # private to the supervisor
        assert os.listdir(tmp_path) == [os.path.basename(path)]  # no temporary left

    def test_other_device_or_database_is_not_used(self, tmp_path, caplog):
        path = cache.cache_path(str(tmp_path), MACID)
        cache.save(path, MACID, "db", DOCS)
        assert cache.load(path, MACID + 1, "db") is None
        assert cache.load(path, MACID, "other") is None

    @pytest.mark.parametrize("content", [
        b"\x00\xff\xfe garbage \x80",
        b'{"version": 1, "macid": %d, "database": "db", "docs": {"a": ' % MACID,
        b"[]",
        b'{"version": 99}',
        b"",
    ])
    def test_corrupt_file_gives_none_and_says_so(self, tmp_path, caplog, content):
        path = cache.cache_path(str(tmp_path), MACID)
        with open(path, "wb") as f:
            f.write(content)
        assert cache.load(path, MACID, "db") is None
        assert path in caplog.text

    def test_documents_not_matching_their_id_are_dropped(self, tmp_path):
        path = cache.cache_path(str(tmp_path), MACID)
        cache.save(path, MACID, "db", dict(DOCS, c={"_id": "other"}, d="text"))
        assert cache.load(path, MACID, "db") == DOCS

    def test_failed_write_leaves_the_old_file(self, tmp_path):
        path = cache.cache_path(str(tmp_path), MACID)
        assert cache.save(path, MACID, "db", DOCS)
        # Something that cannot be written half-way through: the old file stays.
        bad = dict(DOCS, z={"_id": "z", "oops": object()})
        assert cache.save(path, MACID, "db", bad) is False
        assert cache.load(path, MACID, "db") == DOCS
        assert os.listdir(tmp_path) == [os.path.basename(path)]

    def test_full_disk_leaves_the_old_file(self, tmp_path):
        """A write that the kernel refuses half-way (file size limit: EFBIG, as a
        full disk gives ENOSPC) in a process of its own."""
        path = cache.cache_path(str(tmp_path), MACID)
        assert cache.save(path, MACID, "db", DOCS)
        before = open(path, "rb").read()
        script = textwrap.dedent("""
            import json, resource, signal, sys
            from himbeerecouch.agent import cache
            signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
            resource.setrlimit(resource.RLIMIT_FSIZE, (4096, 4096))
            docs = {"big": {"_id": "big", "code": "x" * 100000}}
            ok = cache.save(sys.argv[1], %d, "db", docs)
            sys.exit(0 if ok is False else 1)
            """ % MACID)
        done = subprocess.run([sys.executable, "-c", script, path], capture_output=True,
                              text=True, timeout=60)
        assert done.returncode == 0, done.stdout + done.stderr
        assert "cannot write the document cache" in done.stderr
        assert open(path, "rb").read() == before
        assert os.listdir(tmp_path) == [os.path.basename(path)]

    def test_missing_folder_is_reported_not_raised(self, tmp_path):
        path = cache.cache_path(str(tmp_path / "gone"), MACID)
        assert cache.save(path, MACID, "db", DOCS) is False


# ------------------------------------------------------------------ outage
class TestOutage:
    """What the agent logs while writes fail (issue 12, point 3)."""

    def test_one_line_at_start_a_summary_per_period_one_at_the_end(self, caplog):
        import logging
        from himbeerecouch.agent.outage import Outage
        now = [1000.0]
        log = logging.getLogger("test.outage")
        outage = Outage(log, "the heartbeat", summary_period=300, clock=lambda: now[0])
        with caplog.at_level(logging.INFO, logger="test.outage"):
            outage.ok()                             # nothing failed: nothing to say
            for _ in range(101):                    # 10 min of a retry every 6 s
                outage.failed("Connection refused")
                now[0] += 6
            outage.ok()
            outage.ok()
        lines = [r.getMessage() for r in caplog.records]
        assert len(lines) == 4, lines
        assert lines[0].startswith("cannot write the heartbeat to the database "
                                   "(Connection refused)")
        assert lines[1].startswith("still cannot write the heartbeat") and "5 min" in lines[1]
        assert "50 more failed attempt(s)" in lines[1]
        assert lines[2].startswith("still cannot write the heartbeat") and "10 min" in lines[2]
        assert lines[3] == "writing the heartbeat to the database works again (it failed for " \
                           "10 min)"


class TestDeviceArguments:
    """MacIDs and MAC addresses on the command line (issue 12, point 3)."""

    def test_mac_address_forms(self):
        from himbeerecouch.arguments import macid
        for text in ("b8:27:eb:00:00:01", "B8-27-EB-00-00-01", "b827eb000001", "0xb827eb000001",
                     "202481585881089"):
            assert macid(text) == 0xB827EB000001, text
        assert macid("123456789012") == 123456789012      # digits only: a decimal MacID
        import argparse
        for bad in ("b8:27:eb:00:00", "b8:27-eb:00:00:01", "xyz", "-1", "b827eb00000g"):
            with pytest.raises(argparse.ArgumentTypeError):
                macid(bad)

    def test_provision_device_with_password(self):
        from himbeerecouch.ops.provision import device_argument
        assert device_argument("b8:27:eb:00:00:01:pw:with:colons") == (0xB827EB000001,
                                                                      "pw:with:colons")
        assert device_argument("B8-27-EB-00-00-01:pw") == (0xB827EB000001, "pw")
        assert device_argument("b8:27:eb:00:00:01") == (0xB827EB000001, None)
        assert device_argument("202481585881089:pw") == (0xB827EB000001, "pw")
