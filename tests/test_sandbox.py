"""The sandbox: module names, import folders, environment, spawning, killing,
and the guardian that cleans up after a dead supervisor.

Process tests start real workers and real grandchildren, send real signals,
and kill and reap everything they started, also when they fail.
"""
import json
import os
import select
import signal
import stat
import subprocess
import sys
import textwrap
import time
import uuid

import psutil
import pytest

from helpers import gone, poll_until

from himbeerecouch.sandbox import guardian, proctree
from himbeerecouch.sandbox.environment import worker_environment
from himbeerecouch.sandbox.importdir import (make_import_dir, remove_import_dir,
                                             remove_stale_import_dirs)
from himbeerecouch.sandbox.modules import BadModule, validate_module_name
from himbeerecouch.sandbox.spawn import spawn_worker


def unique_tag():
    return "hc-test-%d-%s-" % (os.getpid(), uuid.uuid4().hex[:8])


def read_line(fd, prefix, timeout=10.0):
    """Read from the non-blocking ``fd`` until a line starts with ``prefix``."""
    deadline = time.monotonic() + timeout
    data = b""
    while time.monotonic() < deadline:
        for line in data.decode().splitlines():
            if line.startswith(prefix):
                return line[len(prefix):]
        ready, _, _ = select.select([fd], [], [], 0.05)
        if ready:
            chunk = os.read(fd, 65536)
            if not chunk:
                break
            data += chunk
    raise AssertionError("no line %r; got %r" % (prefix, data))


# A worker that starts a grandchild in a session of its own, reports both
# pids and then hangs.
ESCAPING_MAIN = textwrap.dedent("""
    import os, subprocess, time
    def main():
        child = subprocess.Popen(["sleep", "1000"], start_new_session=True)
        log("pids", os.getpid(), child.pid)
        while True:
            time.sleep(1)
""")


@pytest.fixture
def workers():
    """Start workers; kill and reap all of them (and their trees) at the end."""
    started = []

    def start(folder, tag, main=ESCAPING_MAIN):
        with open(os.path.join(folder, "main.py"), "x") as f:
            f.write(main)
        worker = spawn_worker({"name": "t", "doc_id": "d", "import_dir": folder,
                               "limits": {}, "database": None},
                              worker_environment(tag), folder)
        started.append((worker, tag))
        return worker

    yield start
    for worker, tag in started:
        proctree.kill_tree(worker.pid, tag)
        worker.popen.wait(10)
        worker.close()


# -- module names -----------------------------------------------------------

@pytest.mark.parametrize("name, message", [
    ("../x", "module name '../x' is not a Python identifier"),
    ("os", "module name 'os' would shadow the standard library module 'os'"),
    ("__init__", "module name '__init__' starts with an underscore"),
    ("a.b", "module name 'a.b' is not a Python identifier"),
    ("", "module name '' is not a Python identifier"),
    ("class", "module name 'class' is a Python keyword"),
    ("couchdb", "module name 'couchdb' would shadow the package 'couchdb'"),
    ("himbeerecouch", "would shadow the package 'himbeerecouch'"),
    ("RPi", "would shadow the package 'RPi'"),
    ("a/b", "is not a Python identifier"),
    ("x\0", "is not a Python identifier"),
    (3, "module name 3 is not a string"),
])
def test_bad_module_names(name, message):
    with pytest.raises(BadModule) as info:
        validate_module_name(name)
    assert message in str(info.value)
    assert isinstance(info.value, ValueError)


@pytest.mark.parametrize("name", ["main", "helper", "shared_2", "Motor", "messgerät"])
def test_good_module_names(name):
    assert validate_module_name(name) == name


@pytest.mark.parametrize("bad", ["../x", "os", "__init__", "a.b", "", "class"])
def test_make_import_dir_writes_nothing_for_a_bad_name(tmp_path, bad):
    with pytest.raises(BadModule):
        make_import_dir(str(tmp_path), "hc-imp-", {"main": "x = 1\n", bad: "y = 2\n"})
    assert os.listdir(tmp_path) == []


def test_make_import_dir_rejects_a_source_that_is_not_text(tmp_path):
    with pytest.raises(BadModule, match="source of module 'helper' is bytes"):
        make_import_dir(str(tmp_path), "hc-imp-", {"main": "", "helper": b"x = 1"})
    with pytest.raises(BadModule, match="source of module 'main' contains a NUL"):
        make_import_dir(str(tmp_path), "hc-imp-", {"main": "x = 1\0"})
    assert os.listdir(tmp_path) == []


# -- import folders ---------------------------------------------------------

def test_make_import_dir_contents_and_modes(tmp_path):
    modules = {"main": "def main():\n    return 'µ'\n",
               "helper": "TEXT = '\udce9'\n",  # a lone surrogate from JSON
               "old": "# -*- coding: latin-1 -*-\nTEXT = 'é'\n"}
    path = make_import_dir(str(tmp_path), "hc-imp-", modules)
    assert os.path.dirname(path) == str(tmp_path)
    assert os.path.basename(path).startswith("hc-imp-")
    assert stat.S_IMODE(os.stat(path).st_mode) == 0o700
    assert sorted(os.listdir(path)) == ["helper.py", "main.py", "old.py"]
    for name in os.listdir(path):
        assert stat.S_IMODE(os.stat(os.path.join(path, name)).st_mode) == 0o600
    # Python reads back what the document said.
    code = ("import sys; sys.path.insert(0, %r); import main, helper, old; "
            "print(ascii((main.main(), helper.TEXT, old.TEXT)))" % path)
    out = subprocess.run([sys.executable, "-I", "-c", code], capture_output=True,
                         check=True, timeout=30).stdout.decode()
    assert out.strip() == ascii(("µ", "\udce9", "é"))
    remove_import_dir(path)
    assert not os.path.exists(path)
    remove_import_dir(path)  # already gone: fine


def test_make_import_dir_chowns_to_owner(tmp_path):
    if os.geteuid() != 0:
        pytest.skip("chown to another user needs root")
    path = make_import_dir(str(tmp_path), "hc-imp-", {"main": ""}, owner_uid=65534)
    assert os.stat(path).st_uid == 65534
    assert os.stat(os.path.join(path, "main.py")).st_uid == 65534
    remove_import_dir(path)


def test_remove_stale_import_dirs(tmp_path):
    old1 = make_import_dir(str(tmp_path), "hc-imp-", {"main": ""})
    old2 = make_import_dir(str(tmp_path), "hc-imp-", {})
    other = tmp_path / "unrelated"
    other.mkdir()
    victim = tmp_path / "victim"
    victim.mkdir()
    (victim / "keep").write_text("x")
    os.symlink(victim, tmp_path / "hc-imp-link")  # never followed
    assert remove_stale_import_dirs(str(tmp_path), "hc-imp-") == sorted([old1, old2])
    assert sorted(os.listdir(tmp_path)) == ["hc-imp-link", "unrelated", "victim"]
    assert (victim / "keep").exists()


@pytest.mark.parametrize("prefix", ["", "../x", "a/b"])
def test_import_dir_prefix_cannot_leave_base(tmp_path, prefix):
    with pytest.raises(ValueError):
        make_import_dir(str(tmp_path), prefix, {"main": ""})


# -- environment ------------------------------------------------------------

def test_worker_environment_is_built_from_scratch(monkeypatch, tmp_path):
    monkeypatch.setenv("HC_FAKE_SECRET", "do-not-leak")
    monkeypatch.setenv("COUCHDB_URL", "http://admin:pw@127.0.0.1:5984")
    monkeypatch.setenv("TZ", "Europe/Berlin")
    env = worker_environment("hc-tag-1", home=str(tmp_path), user="pi")
    assert env == {"PATH": "/usr/local/bin:/usr/bin:/bin", "LANG": "C.UTF-8",
                   "HOME": str(tmp_path), "USER": "pi", "LOGNAME": "pi",
                   "TZ": "Europe/Berlin", "HIMBEERECOUCH_TAG": "hc-tag-1"}
    monkeypatch.delenv("TZ")
    env = worker_environment("hc-tag-2")
    assert set(env) == {"PATH", "LANG", "HOME", "HIMBEERECOUCH_TAG"}
    assert os.path.isdir(env["HOME"])
    with pytest.raises(ValueError):
        worker_environment("a=b")


# -- spawning ---------------------------------------------------------------

def test_spawn_failure_leaks_no_descriptors(tmp_path):
    before = set(os.listdir("/proc/self/fd"))
    with pytest.raises(OSError):
        spawn_worker({"name": "t", "doc_id": "d", "import_dir": str(tmp_path)},
                     worker_environment("hc-x"), str(tmp_path / "missing"))
    assert set(os.listdir("/proc/self/fd")) == before


def test_spawned_worker_holds_only_its_own_descriptors(tmp_path, workers):
    folder = str(tmp_path)
    worker = workers(folder, unique_tag(), main=textwrap.dedent("""
        import os
        def main():
            log("fds", sorted(int(fd) for fd in os.listdir("/proc/self/fd")))
    """))
    fds = read_line(worker.stdout, "fds ")
    # stdin, stdout, stderr, the status pipe and the listing's own descriptor;
    # the start-up pipe is closed after reading.
    assert len(json.loads(fds)) == 5
    assert worker.popen.wait(10) == 0


# -- process trees ----------------------------------------------------------

def test_tree_and_kill_tree_find_the_escaped_grandchild(tmp_path, workers):
    tag = unique_tag()
    worker = workers(str(tmp_path), tag)
    pid, grandchild = map(int, read_line(worker.stdout, "pids ").split())
    assert pid == worker.pid
    assert {p.pid for p in proctree.tree(worker.pid, tag)} == {pid, grandchild}
    assert os.getpid() not in {p.pid for p in proctree.tree(os.getpid(), tag)}
    assert sorted(proctree.kill_tree(worker.pid, tag)) == sorted([pid, grandchild])
    assert poll_until(lambda: gone(grandchild), 5)
    assert worker.popen.wait(10) == -signal.SIGKILL


def test_kill_tree_finds_a_tagged_process_outside_tree_and_session(tmp_path, workers):
    """A double fork plus setsid leaves neither descendant nor session: the tag finds it."""
    tag = unique_tag()
    worker = workers(str(tmp_path), tag, main=textwrap.dedent("""
        import os, subprocess, time
        def main():
            out = subprocess.run("setsid sh -c 'sleep 1000 </dev/null >/dev/null 2>&1 & echo $!' &",
                                 shell=True, capture_output=True, text=True)
            log("daemon", out.stdout.strip())
            while True:
                time.sleep(1)
    """))
    daemon = int(read_line(worker.stdout, "daemon "))
    assert poll_until(lambda: psutil.Process(daemon).ppid() != worker.pid, 5)
    assert daemon not in {p.pid for p in psutil.Process(worker.pid).children(recursive=True)}
    assert os.getsid(daemon) != worker.pid
    assert daemon in proctree.kill_tree(worker.pid, tag)
    assert poll_until(lambda: gone(daemon), 5)


def test_kill_tree_stops_a_fork_loop(tmp_path, workers):
    tag = unique_tag()
    worker = workers(str(tmp_path), tag, main=textwrap.dedent("""
        import os, time
        def main():
            log("forking")
            while True:
                try:
                    if os.fork() == 0:
                        time.sleep(0.5)
                        os._exit(0)
                except OSError:
                    pass
                time.sleep(0.01)
    """))
    read_line(worker.stdout, "forking")
    time.sleep(0.1)  # let it build up some children (not a correctness wait)
    killed = proctree.kill_tree(worker.pid, tag)
    assert worker.pid in killed and len(killed) > 1
    assert poll_until(lambda: all(gone(pid) for pid in killed), 5)
    assert [p for p in proctree.tree(worker.pid, tag) if not gone(p.pid)] == []


def test_kill_tagged_and_signal_worker(tmp_path, workers):
    prefix = unique_tag()
    (tmp_path / "a").mkdir()
    (tmp_path / "b").mkdir()
    a = workers(str(tmp_path / "a"), prefix + "a")
    b = workers(str(tmp_path / "b"), prefix + "b")
    pids = set()
    for worker in (a, b):
        pids.update(map(int, read_line(worker.stdout, "pids ").split()))
    assert {p.pid for p in proctree.find_tagged(prefix)} == pids
    assert set(proctree.kill_tagged(prefix)) == pids
    assert poll_until(lambda: all(gone(pid) for pid in pids), 5)
    assert proctree.find_tagged(prefix) == []
    assert a.popen.wait(10) == -signal.SIGKILL
    assert proctree.signal_worker(a.pid, signal.SIGINT) is False  # reaped: gone
    with pytest.raises(ValueError):
        proctree.kill_tagged("")


# -- guardian ---------------------------------------------------------------

def open_files(pid):
    """What the descriptors of ``pid`` lead to (one closed meanwhile is skipped)."""
    held = []
    for fd in os.listdir("/proc/%d/fd" % pid):
        try:
            held.append(os.readlink("/proc/%d/fd/%s" % (pid, fd)))
        except FileNotFoundError:
            pass
    return held


def test_guardian_cleans_up_when_the_supervisor_goes(tmp_path, workers):
    prefix = unique_tag()
    base = tmp_path / "imports"
    base.mkdir()
    popen, write_fd = guardian.start_guardian(prefix, str(base), "hc-g-")
    try:
        folder = make_import_dir(str(base), "hc-g-", {})
        other = make_import_dir(str(base), "hc-other-", {})
        worker = workers(folder, prefix + "w1")
        pid, grandchild = map(int, read_line(worker.stdout, "pids ").split())
        # The title is set once the guardian is up (and ignores SIGTERM): wait for it.
        title = ("himbeerecouch: guardian " + prefix).encode()
        assert poll_until(lambda: open("/proc/%d/cmdline" % popen.pid, "rb").read()
                          .rstrip(b"\0") == title, 10)
        # The workers do not hold the guardian's pipe: only its closing counts.
        pipe = os.readlink("/proc/self/fd/%d" % write_fd)
        for p in (worker.pid, grandchild):
            assert pipe not in open_files(p)
        os.kill(popen.pid, signal.SIGTERM)  # ignored
        os.close(write_fd)
        write_fd = None
        assert popen.wait(10) == 0
        assert gone(pid) and gone(grandchild)
        assert worker.popen.wait(10) == -signal.SIGKILL
        assert not os.path.exists(folder)
        assert os.path.isdir(other)
    finally:
        if write_fd is not None:
            os.close(write_fd)
        if popen.poll() is None:
            popen.kill()
            popen.wait(10)


def test_guardian_memory_is_small(tmp_path):
    popen, write_fd = guardian.start_guardian(unique_tag(), str(tmp_path), "hc-g-")
    try:
        assert poll_until(lambda: open("/proc/%d/cmdline" % popen.pid, "rb").read()
                          .startswith(b"himbeerecouch: guardian"), 10)
        modules = subprocess.run(
            ["grep", "-c", "psutil", "/proc/%d/maps" % popen.pid],
            capture_output=True, timeout=10).stdout.strip()
        assert modules == b"0"
        assert psutil.Process(popen.pid).memory_info().rss < 20 * 1024 * 1024
    finally:
        os.close(write_fd)
        assert popen.wait(10) == 0
