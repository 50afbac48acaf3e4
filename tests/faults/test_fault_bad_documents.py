"""A generated corpus of bad code and command documents, fed to one running agent.

Hypothesis builds documents with wrong types, huge sizes, odd unicode, module
names with path separators or dunder names, and commands with odd argv.  Each
document is saved as a user would save it; then the test looks where the user
looks: the heartbeat (the worker's state and error), the agent's log, the
command document's ``error`` / ``ret``.  After every batch the supervisor is
still up and the steady worker is still the same process.

Example counts stay modest (CI time); every run draws new examples.  The
fixed bad documents of tests/test_supervisor.py::
test_bad_documents_are_reported_and_harm_nothing are not repeated here.
"""
import base64
import itertools
import json
import os
import re
import keyword
import urllib.parse
import urllib.request

import pytest
from hypothesis import HealthCheck, Phase, given, settings
from hypothesis import strategies as st

from agent import Agent
from faultkit import STEADY, heartbeat, raw_delete, raw_put, result, steady_ok, worker_of
from helpers import create_device_user, delete_doc, put_doc

from himbeerecouch.sandbox.modules import RESERVED, STDLIB

# No shrinking: each example costs seconds against the real agent; the first
# failing batch is reported as it is.
SETTINGS = settings(max_examples=int(os.environ.get("FAULT_EXAMPLES", "10")), deadline=None, database=None, derandomize=False,
                    phases=[Phase.explicit, Phase.generate],
                    suppress_health_check=list(HealthCheck))
SERIAL = itertools.count(1)

RETURNS = "def main():\n    log(%r)\n"


@pytest.fixture(scope="module")
def fleet(mod_db, tmp_path_factory):
    device = mod_db.device
    put_doc(mod_db.admin, "steady", type=device.macid, name="steady", code=STEADY)
    agent = Agent(mod_db.couch.url, mod_db.name, device, tmp_path_factory.mktemp("bad"),
                  args=["--heartbeat-interval", "2"], stop_timeout=2)
    try:
        agent.start()
        steady = agent.wait_worker("steady", timeout=30)
        agent.wait_line(r"\[steady\] tick 1")
        yield agent, mod_db, steady
    finally:
        agent.close()


# ------------------------------------------------------------------ strategies
ODD_PIECES = st.one_of(
    st.characters(),                                   # any code point but surrogates
    st.sampled_from(["\u202e", "\u200b", "\u0301", "\U0001F600", "\x1b[2J", "\x00", "\ud800",
                     "\udfff", "\n", "\r", "\t", "\u2028", "\ufb01", "\u0130", "\x7f", "]"]))


def odd_text(min_size=1, max_size=12):
    return st.lists(ODD_PIECES, min_size=min_size, max_size=max_size).map("".join)


ODD_TEXT = odd_text()
NO_SURROGATES = st.text(st.one_of(st.characters(blacklist_categories=("Cs",)),
                                  st.sampled_from(["\u202e", "\x1b", "/", "\\", " ", "%"])),
                        min_size=1, max_size=16)

IDENT = st.from_regex(r"[a-z][a-z0-9]{0,8}", fullmatch=True).filter(
    lambda s: s not in STDLIB and s not in RESERVED and not keyword.iskeyword(s) and s != "main")
STDLIB_NAMES = sorted(n for n in STDLIB if n.isidentifier() and not n.startswith("_"))
BAD_MODULE_NAMES = st.one_of(
    st.builds(lambda a, sep, b: a + sep + b, IDENT,
              st.sampled_from(["/", "\\", "/../", "..", "./", ".", "\x00", " ", "-", ":"]), IDENT),
    st.builds(lambda a: "../" * 3 + a, IDENT),
    st.builds(lambda a: "/tmp/" + a, IDENT),
    st.builds(lambda a: "__%s__" % a, IDENT),
    st.sampled_from(["__init__", "__main__", "__builtins__", "_", "__"]),
    st.builds(lambda a: "_" + a, IDENT),
    st.sampled_from(STDLIB_NAMES),
    st.sampled_from(sorted(RESERVED) + ["class", "None", "", "1abc", "\ufb01le", "a b"]),
    odd_text(0).filter(lambda s: not s.isidentifier()),
    st.integers(256, 300).map(lambda n: "m" * n),
)
NOT_STRING = st.one_of(st.integers(), st.floats(allow_nan=False, allow_infinity=False),
                       st.booleans(), st.lists(st.integers(), max_size=3),
                       st.dictionaries(st.text(max_size=3), st.integers(), max_size=2))
NOT_OBJECT = st.one_of(st.integers(), st.booleans(), st.text(max_size=5),
                       st.lists(st.text(max_size=3), max_size=3))


def case(kind, fields, fragment=None, **extra):
    return dict(kind=kind, fields=fields, fragment=fragment, **extra)


def fatal(fields, fragment):
    base = {"code": RETURNS % "never runs", "restart": "never"}
    base.update(fields)
    return case("fatal", base, fragment)


def huge_code(char, extra):
    n = (1024 * 1024) // len(char.encode("utf-8", "surrogatepass")) + extra
    return "# " + char * n + "\ndef main():\n    pass\n"


CODE_CASES = st.one_of(
    NOT_STRING.map(lambda v: fatal({"code": v}, "'code' must be a string")),
    NOT_OBJECT.map(lambda v: fatal({"modules": v}, "'modules' must be an object")),
    BAD_MODULE_NAMES.map(lambda n: fatal({"modules": {n: "x = 1\n"}}, "module name")),
    st.tuples(IDENT, NOT_STRING).map(
        lambda t: fatal({"modules": {t[0]: t[1]}}, "must be a string of Python source")),
    st.one_of(st.text(max_size=10).filter(lambda s: s not in ("on-failure", "always", "never")),
              st.integers(), st.lists(st.integers(), max_size=2)).map(
        lambda v: fatal({"restart": v}, "'restart' must be one of")),
    st.one_of(NOT_OBJECT.map(lambda v: v if not isinstance(v, dict) else []),
              st.fixed_dictionaries({"memory_mb": st.one_of(
                  st.integers(max_value=0), st.text(max_size=4), st.booleans(),
                  st.lists(st.integers(), max_size=1))}),
              st.dictionaries(IDENT.filter(lambda k: k not in ("memory_mb", "cpu_seconds",
                                                                "nofile")),
                              st.integers(1, 10), min_size=1, max_size=2),
              st.sampled_from([{"memory_mb": 1e300}, {"cpu_seconds": 10 ** 30},
                               {"nofile": 2 ** 64}])).map(
        lambda v: fatal({"limits": v}, "limit")),
    st.tuples(st.sampled_from(["x", "\u00e9", "\U0001F600", "\u4e2d"]), st.integers(1, 50000)).map(
        lambda t: fatal({"code": huge_code(*t)}, "bytes of source")),
    st.integers(20, 40).map(lambda n: fatal(
        {"modules": {"m%d" % i: "# " + "y" * 60000 + "\n" for i in range(n)}},
        "bytes of source")),
    st.sampled_from(["def main(:\n", "def main():\nreturn 1\n", "x = (\n",
                     "def main():\n    pass\n\x00\n", "\ufeffdef main() pass\n"]).map(
        lambda c: fatal({"code": c}, None)),
    st.sampled_from([("x = 1\n", "no main()"), ("main = 5\n", "not callable")]).map(
        lambda t: fatal({"code": t[0]}, t[1])),
    # Runs, under an odd name (or none usable: the document id names it).
    st.one_of(ODD_TEXT, NOT_STRING, st.text(" \t\n", max_size=3),
              st.text(min_size=200, max_size=400)).map(
        lambda name: case("runs", {"name": name}, name=name)),
    # Runs and prints odd unicode; or raises it.
    ODD_TEXT.map(lambda text: case("runs", {}, said=text)),
    ODD_TEXT.map(lambda text: case("raises", {}, raised=text)),
    # A module of its own with a unicode name.
    st.text(st.characters(whitelist_categories=("Ll", "Lu", "Lo")), min_size=1, max_size=8)
    .filter(lambda s: s.isidentifier() and s not in STDLIB and s not in RESERVED
            and __import__("unicodedata").normalize("NFKC", s) == s
            and not keyword.iskeyword(s) and s != "main")
    .map(lambda m: case("runs", {"modules": {m: "V = %r\n" % m}}, module=m)),
    # Not addressed to this device at all: nothing may run, nothing may break.
    st.sampled_from(["list", "dict", "space", "half", "negative", "true", "null", "hex"]).map(
        lambda how: case("ignored", {}, how=how)),
    # Bad global modules in a document without code: warned about, nothing else.
    st.one_of(NOT_OBJECT.map(lambda v: {"global_modules": v}),
              BAD_MODULE_NAMES.map(lambda n: {"global_modules": {n: "x = 1\n"}})).map(
        lambda f: case("warned", f, "global modules ignored")),
)


def wrong_type(how, macid):
    return {"list": [macid], "dict": {"id": macid}, "space": " %d" % macid,
            "half": macid + 0.5, "negative": -macid, "true": True, "null": None,
            "hex": hex(macid)}[how]


DOC_ID = st.one_of(st.just(""), st.just(""), NO_SURROGATES.filter(lambda s: not s.startswith("_")),
                   st.sampled_from(["\ud800", "x\udfff/y"]))


def usable(doc_id):
    try:
        doc_id.encode("utf-8")
        return True
    except UnicodeEncodeError:
        return False


def expected_name(c, doc_id):
    """One line of at most 80 printable characters (U+FFFD for the others)."""
    name = c["name"] if "name" in c else doc_id     # build() names it by its id
    if isinstance(name, str) and name.strip():
        name = " ".join(name.split())[:80]
        return "".join(ch if ch.isprintable() or ch == "\u200d" else "\ufffd" for ch in name)
    return doc_id


def build(c, macid, doc_id, token):
    fields = {"type": macid, "name": doc_id, "restart": "never", "code": RETURNS % token}
    if c["kind"] == "warned":
        fields.pop("code")
    if c["kind"] == "ignored":
        fields["type"] = wrong_type(c["how"], macid)
    if "name" in c:
        fields["name"] = c["name"]
    if "said" in c:
        fields["code"] = "def main():\n    log(%r, %r)\n" % (token, c["said"])
    if "raised" in c:
        fields["code"] = "def main():\n    log(%r)\n    raise ValueError(%r)\n" % (token,
                                                                               c["raised"])
    if "module" in c:
        fields["code"] = "import %s\ndef main():\n    log(%r, %s.V)\n" % (c["module"], token,
                                                                       c["module"])
    fields.update(c["fields"])
    return fields


# ------------------------------------------------------------------ code documents
@SETTINGS
@given(st.lists(st.tuples(CODE_CASES, DOC_ID), min_size=1, max_size=4))
def test_bad_code_documents(fleet, batch):
    agent, mod_db, steady = fleet
    macid = mod_db.device.macid
    made = []
    for c, suffix in batch:
        n = next(SERIAL)
        doc_id = "c%d%s" % (n, suffix)
        token = "ran<%d>" % n
        rev = raw_put(mod_db.couch, mod_db.name, dict(build(c, macid, doc_id, token), _id=doc_id))
        if rev is not None:     # (a server may refuse an id or a field outright)
            unusable = not usable(doc_id) and c["kind"] != "ignored"
            made.append((dict(c, kind="unusable") if unusable else c,
                         doc_id, token, rev))
    try:
        def all_seen(hb):
            for c, doc_id, token, _ in made:
                w = worker_of(hb, doc_id)
                if c["kind"] == "fatal":
                    if w.get("state") != "fatal" or not w.get("error"):
                        return False
                elif c["kind"] == "runs":
                    if w.get("state") != "exited" or w.get("last_exit_code") != 0:
                        return False
                elif c["kind"] == "raises":
                    if w.get("state") != "exited" or w.get("last_exit_code") != 1:
                        return False
            return True
        hb = heartbeat(mod_db.admin, macid, all_seen, timeout=30,
                       message="every document of the batch in the heartbeat: %r"
                       % [(c["kind"], i) for c, i, _, _ in made])
        out = agent.output()
        for c, doc_id, token, _ in made:
            w = worker_of(hb, doc_id)
            first = (doc_id.splitlines() or [""])[0]
            if c["kind"] == "fatal":
                if c["fragment"]:
                    assert c["fragment"] in w["error"], (doc_id, w["error"])
                assert any("cannot run document %s" % first in line
                           for line in agent.find_lines("cannot run document")), doc_id
                assert agent.worker(doc_id) is None
            elif c["kind"] == "runs":
                assert w["error"] is None, w
                assert w["name"] == expected_name(c, doc_id), w
                assert token in out, "%s did not run" % doc_id
            elif c["kind"] == "raises":
                assert w["error"].startswith("ValueError: "), w
                assert "main.py" in w["traceback"]
            elif c["kind"] == "ignored":
                assert not w and token not in out
            elif c["kind"] == "warned":
                assert not w
                # (an id with line breaks is printed over several lines)
                said = ("document %s: global modules ignored" % doc_id).splitlines()[-1]
                agent.wait_line(re.escape(said))
            elif c["kind"] == "unusable":
                assert not w and token not in out
                agent.wait_line(r"document %s ignored: its id holds a lone surrogate"
                                % re.escape(ascii(doc_id)))
        steady_ok(agent, "steady", steady)
    finally:
        for _, doc_id, _, rev in made:
            try:
                raw_delete(mod_db.couch, mod_db.name, doc_id, rev)
            except Exception:
                pass


# ------------------------------------------------------------------ command documents
ARG = st.text(st.characters(blacklist_characters="\x00"), max_size=30)


def cmd_case(kind, cmd, fragment=None, **extra):
    return dict(kind=kind, cmd=cmd, fragment=fragment, **extra)


COMMAND_CASES = st.one_of(
    st.one_of(st.text(max_size=10), st.integers(), st.none(), st.booleans(),
              st.dictionaries(st.text(max_size=3), st.text(max_size=3), max_size=2),
              st.just([])).map(
        lambda v: cmd_case("error", v, "'cmd' must be a non-empty list of strings")),
    st.lists(st.one_of(st.text(max_size=5), NOT_STRING), min_size=1, max_size=4).filter(
        lambda l: not all(isinstance(a, str) for a in l)).map(
        lambda v: cmd_case("error", v, "'cmd' must be a non-empty list of strings")),
    st.lists(ARG, max_size=3).map(lambda rest: cmd_case("error", [""] + rest,
                                                        "'cmd' names no program")),
    st.tuples(st.text(max_size=5), st.text(max_size=5)).map(
        lambda t: cmd_case("error", ["printf", t[0] + "\x00" + t[1]], "NUL")),
    st.one_of(st.from_regex(r"no-such-program-[a-z]{1,8}", fullmatch=True),
              st.builds(lambda a: "../../" + a, st.from_regex(r"[a-z]{1,8}", fullmatch=True)),
              st.builds(lambda a: "./" + a, st.from_regex(r"[a-z]{1,8}", fullmatch=True))).map(
        lambda p: cmd_case("error", [p], "program not found: %s" % p)),
    st.sampled_from(["/", "/tmp", "/usr/bin/"]).map(
        lambda p: cmd_case("error", [p], "permission denied: %s" % p)),
    st.sampled_from([200 * 1024, 300 * 1024]).map(
        lambda n: cmd_case("error", ["printf", "%s", "z" * n], "cannot run printf")),
    st.one_of(st.text(max_size=5), st.integers(max_value=0), st.booleans(),
              st.lists(st.integers(), max_size=2)).map(
        lambda t: cmd_case("error", ["true"], "'timeout' must be a positive number", timeout=t)),
    # Valid, with odd arguments: they reach the program exactly.
    st.lists(ARG, min_size=1, max_size=4).map(
        lambda args: cmd_case("echo", ["printf", "%s\\n"] + args, args=args)),
    st.lists(odd_text(0, 6), min_size=1, max_size=3).map(
        lambda args: cmd_case("answer", ["printf", "%s\\n"] + args)),
    st.sampled_from([10 ** 6, 1e300, 0.5]).map(
        lambda t: cmd_case("echo", ["printf", "%s\\n", "t"], args=["t"], timeout=t)),
)


@SETTINGS
@given(st.lists(st.tuples(COMMAND_CASES, DOC_ID), min_size=1, max_size=4))
def test_bad_command_documents(fleet, batch):
    agent, mod_db, steady = fleet
    macid = mod_db.device.macid
    made = []
    for c, suffix in batch:
        doc_id = "k%d%s" % (next(SERIAL), suffix)
        doc = {"_id": doc_id, "type": "%d_cmd" % macid, "cmd": c["cmd"]}
        if "timeout" in c:
            doc["timeout"] = c["timeout"]
        if raw_put(mod_db.couch, mod_db.name, doc) is not None:
            made.append((c, doc_id))
    for c, doc_id in made:
        if not usable(doc_id):
            agent.wait_line(r"document %s ignored: its id holds a lone surrogate"
                            % re.escape(ascii(doc_id)))
            continue
        doc = result(mod_db.admin, doc_id, timeout=40)
        if c["kind"] == "error":
            assert c["fragment"] in doc["error"], (c, doc)
            assert doc["ret"][1] == doc["error"]
        elif c["kind"] == "echo":
            assert "error" not in doc, doc
            assert doc["ret"][0] == "".join(a + "\n" for a in c["args"]), doc
            assert doc["exit_code"] == 0
        else:       # odd unicode arguments: an answer, either way
            assert doc.get("error") or doc["exit_code"] == 0, doc
    steady_ok(agent, "steady", steady)


# ------------------------------------------------------------------ nested too deep
def test_deeply_nested_documents_do_not_blind_the_feed(fleet):
    """A document nested deeper than a JSON decoder recurses is stored by the
    server; the agent must keep following everything else."""
    agent, mod_db, steady = fleet
    macid = mod_db.device.macid
    depth = 3000
    base = "%s/%s/" % (mod_db.couch.url, urllib.parse.quote(mod_db.name, safe=""))
    auth = base64.b64encode(("%s:%s" % (mod_db.couch.admin_name,
                                        mod_db.couch.admin_password)).encode()).decode()
    revs = {}
    for doc_id, kind in (("deep-code", macid), ("deep-cmd", "%d_cmd" % macid)):
        body = '{"type": %s, "name": "%s", "code": "def main(): pass\\n", "cmd": ["true"], ' \
               '"x": %s%s}' % (json.dumps(kind), doc_id, "[" * depth, "]" * depth)
        req = urllib.request.Request(base + doc_id, data=body.encode(), method="PUT",
                                     headers={"Content-Type": "application/json",
                                              "Authorization": "Basic " + auth})
        with urllib.request.urlopen(req, timeout=30) as answer:
            assert answer.status in (200, 201)
            revs[doc_id] = json.loads(answer.read())["rev"]
    mark = agent.mark()
    put_doc(mod_db.admin, "after-deep", type=macid, name="after-deep", restart="never",
            code=RETURNS % "after-deep ran")
    mod_db.admin.save({"_id": "cmd-after-deep", "type": "%d_cmd" % macid,
                       "cmd": ["echo", "still here"]})
    agent.wait_line(r"after-deep ran", after=mark, timeout=40)
    assert result(mod_db.admin, "cmd-after-deep")["ret"][0] == "still here\n"
    hb = heartbeat(mod_db.admin, macid,
                   lambda hb: worker_of(hb, "deep-code").get("state") == "fatal",
                   message="the unreadable document in the heartbeat")
    assert "nests too deeply" in worker_of(hb, "deep-code")["error"]
    steady_ok(agent, "steady", steady)
    delete_doc(mod_db.admin, "after-deep")
    for doc_id, rev in revs.items():      # the client cannot read them: raw HTTP
        raw_delete(mod_db.couch, mod_db.name, doc_id, rev)
    agent.wait_line(r"deep-code: FATAL -> STOPPED", after=mark, timeout=30)


def test_deeply_nested_document_at_start(fleet, tmp_path):
    """The same, read in the first full list of an agent that starts."""
    _, mod_db, _ = fleet
    device = create_device_user(mod_db.users, mod_db.couch.url)
    depth = 3000
    rev = raw_put(mod_db.couch, mod_db.name, {"_id": "deep-at-start", "type": device.macid,
                                              "code": "def main(): pass\n", "x": []})
    base = "%s/%s/deep-at-start" % (mod_db.couch.url, urllib.parse.quote(mod_db.name, safe=""))
    auth = base64.b64encode(("%s:%s" % (mod_db.couch.admin_name,
                                        mod_db.couch.admin_password)).encode()).decode()
    body = '{"_rev": "%s", "type": %d, "x": %s%s}' % (rev, device.macid, "[" * depth, "]" * depth)
    req = urllib.request.Request(base, data=body.encode(), method="PUT",
                                 headers={"Content-Type": "application/json",
                                          "Authorization": "Basic " + auth})
    with urllib.request.urlopen(req, timeout=30) as answer:
        rev = json.loads(answer.read())["rev"]
    put_doc(mod_db.admin, "fine-at-start", type=device.macid, name="fine", restart="never",
            code=RETURNS % "fine at start ran")
    agent = Agent(mod_db.couch.url, mod_db.name, device, tmp_path / "state")
    try:
        agent.start()
        agent.wait_line(r"fine at start ran", timeout=30)
        agent.wait_line(r"document deep-at-start nests too deeply")
        hb = heartbeat(mod_db.admin, device.macid,
                       lambda hb: worker_of(hb, "deep-at-start").get("state") == "fatal")
        assert "nests too deeply" in worker_of(hb, "deep-at-start")["error"]
        assert agent.stop() == 0, agent.output()
    finally:
        agent.close()
        raw_delete(mod_db.couch, mod_db.name, "deep-at-start", rev)
        delete_doc(mod_db.admin, "fine-at-start")
        users = mod_db.users
        users.delete(users["org.couchdb.user:" + device.user])
