"""The worker runner (himbeerecouch.runner), exercised through real processes.

Every test writes a real import folder, starts a real ``python -I -m
himbeerecouch.runner`` with sandbox.spawn_worker and watches its pipes and
exit code.  Every process started here is killed and reaped by the
``spawn`` fixture, also when a test fails.
"""
import json
import os
import select
import signal
import subprocess
import sys
import textwrap
import time
import uuid

import psutil
import pytest

from helpers import gone, poll_until

from himbeerecouch.sandbox.environment import worker_environment
from himbeerecouch.sandbox.importdir import make_import_dir, remove_import_dir
from himbeerecouch.sandbox.proctree import kill_tree
from himbeerecouch.sandbox.spawn import spawn_worker

DATABASE = {"url": "http://127.0.0.1:9", "name": "nedm/raspberries",
            "user": "202481587074134", "password": "s3cret-device-password"}


class Worker:
    """One spawned worker plus everything it wrote so far."""

    def __init__(self, base, modules, limits=None, name="test code", doc_id="doc1"):
        self.dir = make_import_dir(base, "hc-imp-", {
            k: textwrap.dedent(v) for k, v in modules.items()})
        self.tag = "hc-test-%d-%s" % (os.getpid(), uuid.uuid4().hex[:8])
        self.startup = {
            "name": name, "doc_id": doc_id, "rev": "1-abc", "import_dir": self.dir,
            "main_module": "main", "title": "himbeerecouch: %s [%s]" % (name, doc_id),
            "supervisor_pid": os.getpid(),
            "limits": dict({"memory_mb": None, "cpu_seconds": None, "nofile": None},
                           **(limits or {})),
            "database": DATABASE,
        }
        self.proc = spawn_worker(self.startup, worker_environment(self.tag), self.dir, None)
        self.pid = self.proc.pid
        self.data = {"status": b"", "stdout": b"", "stderr": b""}
        self.open = {self.proc.status: "status", self.proc.stdout: "stdout",
                     self.proc.stderr: "stderr"}

    def pump(self, timeout):
        """Read whatever arrives within ``timeout`` seconds."""
        if not self.open:
            return
        ready, _, _ = select.select(list(self.open), [], [], timeout)
        for fd in ready:
            try:
                chunk = os.read(fd, 65536)
            except BlockingIOError:
                continue
            if chunk:
                self.data[self.open[fd]] += chunk
            else:
                del self.open[fd]

    def wait_for(self, predicate, timeout=10.0, what="condition"):
        deadline = time.monotonic() + timeout
        while not predicate():
            if time.monotonic() > deadline:
                raise AssertionError("timed out waiting for %s; got %r" % (what, self.data))
            self.pump(0.05)

    def finish(self, timeout=10.0):
        """Wait for the exit (and the pipes' EOF); return the exit code."""
        deadline = time.monotonic() + timeout
        while self.proc.popen.poll() is None or self.open:
            if time.monotonic() > deadline:
                if self.proc.popen.poll() is not None:
                    break  # exited; some escaped grandchild holds a pipe
                raise AssertionError("worker did not end; got %r" % (self.data,))
            self.pump(0.05)
        return self.proc.popen.returncode

    @property
    def events(self):
        return [json.loads(line) for line in self.data["status"].decode().splitlines()]

    def event(self, name):
        found = [e for e in self.events if e["event"] == name]
        return found[0] if found else None

    def stdout_lines(self):
        return self.data["stdout"].decode().splitlines()

    def wait_running(self):
        self.wait_for(lambda: self.event("running"), what="running")

    def wait_line(self, prefix):
        """Wait for a stdout line starting with ``prefix``; return its rest."""
        def found():
            return [l for l in self.stdout_lines() if l.startswith(prefix)]
        self.wait_for(found, what="a line %r" % prefix)
        return found()[0][len(prefix):]

    def cleanup(self):
        kill_tree(self.pid, self.tag)
        try:
            self.proc.popen.wait(10)
        finally:
            self.proc.close()
            remove_import_dir(self.dir)


@pytest.fixture
def spawn(tmp_path):
    workers = []

    def start(modules, **kw):
        worker = Worker(str(tmp_path), modules, **kw)
        workers.append(worker)
        return worker

    yield start
    for worker in workers:
        worker.cleanup()


def test_main_logs_and_reports_running_then_done(spawn):
    w = spawn({"main": """
        import os
        def main():
            log("hello", 42, should_quit())
    """})
    assert w.finish() == 0
    assert w.stdout_lines() == ["hello 42 False"]
    assert w.events == [{"event": "running", "pid": w.pid}, {"event": "done"}]
    assert w.data["stderr"] == b""


def test_exception_gives_traceback_error_event_and_exit_1(spawn):
    w = spawn({"main": """
        def main():
            x = 1
            raise ValueError("boom")
    """})
    assert w.finish() == 1
    stderr = w.data["stderr"].decode()
    main_py = os.path.join(w.dir, "main.py")
    assert 'File "%s", line 4, in main' % main_py in stderr
    assert stderr.rstrip().endswith("ValueError: boom")
    assert stderr.startswith("Traceback (most recent call last):\n  File \"%s\"" % main_py)
    assert "runner" not in stderr  # the runner's own frames are trimmed
    error = w.event("error")
    assert error["error"] == "ValueError: boom"
    assert error["traceback"] == stderr
    assert w.event("done") is None


def test_exception_in_helper_module_shows_both_files(spawn):
    w = spawn({"main": """
        import helper
        def main():
            helper.go()
    """, "helper": """
        def go():
            {}["missing"]
    """})
    assert w.finish() == 1
    tb = w.event("error")["traceback"]
    assert 'main.py", line 4, in main' in tb
    assert 'helper.py", line 3, in go' in tb
    assert w.event("error")["error"] == "KeyError: 'missing'"


def test_sys_exit_code_is_the_exit_code(spawn):
    w = spawn({"main": """
        import sys
        def main():
            sys.exit(3)
    """})
    assert w.finish() == 3
    assert w.event("error") is None and w.event("fatal") is None


def test_os_exit(spawn):
    w = spawn({"main": """
        import os
        def main():
            os._exit(5)
    """})
    assert w.finish() == 5
    assert [e["event"] for e in w.events] == ["running"]


def test_syntax_error_in_helper_is_fatal(spawn):
    w = spawn({"main": """
        import helper
        def main():
            pass
    """, "helper": """
        x = 1

        def broken(:
            pass
    """})
    assert w.finish() == 78
    fatal = w.event("fatal")
    assert fatal["error"].startswith("SyntaxError: ")
    assert "(helper.py, line 4)" in fatal["error"]
    assert w.event("running") is None
    stderr = w.data["stderr"].decode()
    assert 'helper.py", line 4' in stderr and "runner" not in stderr


def test_missing_main_is_fatal(spawn):
    w = spawn({"main": """
        def mian():
            pass
    """})
    assert w.finish() == 78
    assert w.event("fatal")["error"] == "main.py defines no main()"
    assert w.event("running") is None


def test_private_and_global_modules_and_explicit_api_import(spawn):
    w = spawn({"main": """
        import helper, shared
        from himbeerecouch.runner.api import log as imported_log
        def main():
            imported_log("sum", helper.value() + shared.VALUE)
            imported_log("same", imported_log is log)
    """, "helper": """
        def value():
            return 1
    """, "shared": "VALUE = 41\n"})
    assert w.finish() == 0
    assert w.stdout_lines() == ["sum 42", "same True"]


def test_sigint_sets_quit_and_runs_notifications_once(spawn):
    w = spawn({"main": """
        import time
        def failing():
            raise RuntimeError("notification failed")
        def note():
            log("notified", should_quit())
        register_quit_notification(failing)
        register_quit_notification(note)
        def main():
            log("waiting")
            while not should_quit():
                time.sleep(0.01)
            time.sleep(0.2)  # room for a second SIGINT to (not) do anything
            log("quit", should_quit())
    """})
    w.wait_line("waiting")
    os.kill(w.pid, signal.SIGINT)
    w.wait_line("notified")
    os.kill(w.pid, signal.SIGINT)
    assert w.finish() == 0
    assert w.stdout_lines() == ["waiting", "notified True", "quit True"]
    assert "RuntimeError: notification failed" in w.data["stderr"].decode()
    assert "KeyboardInterrupt" not in w.data["stderr"].decode()
    assert w.events[-1] == {"event": "done"}


def test_late_quit_notification_is_called_at_once_and_remove_works(spawn):
    w = spawn({"main": """
        import time
        def main():
            removed = lambda: log("removed one ran")
            register_quit_notification(removed)
            remove_quit_notification(removed)
            log("ready")
            while not should_quit():
                time.sleep(0.01)
            register_quit_notification(lambda: log("late"))
    """})
    w.wait_line("ready")
    os.kill(w.pid, signal.SIGINT)
    assert w.finish() == 0
    assert w.stdout_lines() == ["ready", "late"]


def test_worker_ignoring_sigint_is_killed_by_kill_tree(spawn):
    w = spawn({"main": """
        import signal, time
        def main():
            signal.signal(signal.SIGINT, signal.SIG_IGN)
            log("ignoring")
            while True:
                time.sleep(1)
    """})
    w.wait_line("ignoring")
    os.kill(w.pid, signal.SIGINT)
    w.pump(0.2)
    assert w.proc.popen.poll() is None
    assert kill_tree(w.pid, w.tag) == [w.pid]
    assert w.finish() == -signal.SIGKILL


def test_kill_tree_kills_a_grandchild_in_its_own_session(spawn):
    w = spawn({"main": """
        import subprocess, time
        def main():
            child = subprocess.Popen(["sleep", "1000"], start_new_session=True)
            log("grandchild", child.pid)
            while True:
                time.sleep(1)
    """})
    grandchild = int(w.wait_line("grandchild "))
    assert os.getsid(grandchild) == grandchild != os.getsid(w.pid)
    killed = kill_tree(w.pid, w.tag)
    assert set(killed) == {w.pid, grandchild}
    assert poll_until(lambda: gone(grandchild), 5)
    assert w.finish() == -signal.SIGKILL


def test_memory_limit(spawn):
    w = spawn({"main": """
        def main():
            try:
                block = bytearray(200 * 1024 * 1024)
            except MemoryError:
                log("MemoryError")
            else:
                log("allocated", len(block))
    """}, limits={"memory_mb": 64})
    assert w.finish() == 0
    assert w.stdout_lines() == ["MemoryError"]


def test_cpu_and_file_limits(spawn):
    files = spawn({"main": """
        def main():
            handles = []
            try:
                for _ in range(64):
                    handles.append(open("/dev/null"))
            except OSError as exc:
                log("refused", exc.errno)
    """}, limits={"nofile": 16})
    spinner = spawn({"main": """
        def main():
            log("spinning")
            while True:
                pass
    """}, limits={"cpu_seconds": 1})
    assert files.finish() == 0
    assert files.stdout_lines() == ["refused 24"]  # EMFILE
    assert spinner.finish(timeout=15) == -signal.SIGXCPU


def test_segfault_shows_the_python_traceback(spawn):
    w = spawn({"main": """
        import ctypes
        def crash():
            ctypes.string_at(0)
        def main():
            crash()
    """})
    assert w.finish() == -signal.SIGSEGV
    stderr = w.data["stderr"].decode()
    assert "Segmentation fault" in stderr
    assert 'main.py", line 4 in crash' in stderr


def test_environment_is_minimal_and_tagged(spawn, monkeypatch):
    monkeypatch.setenv("HC_FAKE_SECRET", "do-not-leak")
    w = spawn({"main": """
        import json, os
        def main():
            log(json.dumps(dict(os.environ)))
    """})
    assert w.finish() == 0
    env = json.loads(w.stdout_lines()[0])
    assert env["HIMBEERECOUCH_TAG"] == w.tag
    for key, value in os.environ.items():
        if key not in ("PATH", "LANG", "HOME", "TZ", "USER", "LOGNAME"):
            assert key not in env
    assert "HC_FAKE_SECRET" not in env and "COUCHDB_URL" not in env
    assert not any(DATABASE["password"] in value for value in env.values())


def test_process_title_and_no_credentials_on_the_command_line(spawn):
    w = spawn({"main": """
        import time
        def main():
            while not should_quit():
                time.sleep(0.01)
    """}, name="pressure gauge", doc_id="f00d")
    w.wait_running()
    with open("/proc/%d/cmdline" % w.pid, "rb") as f:
        cmdline = f.read()
    assert cmdline.rstrip(b"\0").decode() == "himbeerecouch: pressure gauge [f00d]"
    with open("/proc/%d/environ" % w.pid, "rb") as f:
        assert DATABASE["password"].encode() not in f.read()
    os.kill(w.pid, signal.SIGINT)
    assert w.finish() == 0


def test_sigusr1_reports_the_stacks(spawn):
    w = spawn({"main": """
        import threading, time
        def napping_thread():
            while True:
                time.sleep(0.05)
        def waiting_in_main():
            log("ready")
            while not should_quit():
                time.sleep(0.01)
        def main():
            threading.Thread(target=napping_thread, name="napper", daemon=True).start()
            waiting_in_main()
    """})
    w.wait_line("ready")
    os.kill(w.pid, signal.SIGUSR1)
    w.wait_for(lambda: w.event("stacks"), what="stacks")
    text = w.event("stacks")["text"]
    assert "in waiting_in_main" in text and "in napping_thread" in text
    assert "Thread napper" in text and "Thread MainThread" in text
    os.kill(w.pid, signal.SIGINT)
    assert w.finish() == 0


def test_database_access_is_lazy_and_logged_in(spawn):
    w = spawn({"main": """
        import sys
        def main():
            log("couchdb imported", "couchdb" in sys.modules)
            log("ours", sorted(m for m in sys.modules if m.startswith("himbeerecouch")
                               and not m.startswith("himbeerecouch.runner")))
            server = get_acct()
            log("credentials", server.resource.credentials == (%r, %r))
            log("url", server.resource.url)
            try:
                get_database()
            except Exception as exc:  # nothing listens on port 9
                log("unreachable", type(exc).__name__)
    """ % (DATABASE["user"], DATABASE["password"])})
    assert w.finish() == 0
    assert w.stdout_lines()[:4] == ["couchdb imported False", "ours ['himbeerecouch']",
                                    "credentials True", "url http://127.0.0.1:9"]
    assert w.stdout_lines()[4].startswith("unreachable ")


def test_worker_memory_and_start_up_time(spawn):
    w = spawn({"main": """
        import time
        def main():
            while not should_quit():
                time.sleep(0.01)
    """})
    started = time.monotonic()
    w.wait_running()
    assert time.monotonic() - started < 2.0
    bare = subprocess.Popen([sys.executable, "-I", "-u", "-c",
                             "import sys; sys.stdout.write('up\\n'); sys.stdin.read()"],
                            stdin=subprocess.PIPE, stdout=subprocess.PIPE)
    try:
        assert bare.stdout.readline() == b"up\n"
        worker_rss = psutil.Process(w.pid).memory_info().rss
        bare_rss = psutil.Process(bare.pid).memory_info().rss
    finally:
        bare.stdin.close()
        bare.wait(10)
        bare.stdout.close()
    assert worker_rss <= bare_rss + 4 * 1024 * 1024, (worker_rss, bare_rss)
    os.kill(w.pid, signal.SIGINT)
    assert w.finish() == 0


def run_runner(argv, startup_bytes=None):
    """Run the runner by hand with the given argv and start-up bytes."""
    fds = []
    if startup_bytes is not None:
        r, wr = os.pipe()
        os.write(wr, startup_bytes)
        os.close(wr)
        status_r, status_w = os.pipe()
        fds = [r, status_w]
        argv = argv + ["--startup-fd", str(r), "--status-fd", str(status_w)]
    try:
        proc = subprocess.run([sys.executable, "-I", "-u", "-m", "himbeerecouch.runner"] + argv,
                              stdin=subprocess.DEVNULL, capture_output=True, timeout=30,
                              pass_fds=fds)
    finally:
        for fd in fds:
            os.close(fd)
    if startup_bytes is not None:
        status = b""
        while True:
            chunk = os.read(status_r, 65536)
            if not chunk:
                break
            status += chunk
        os.close(status_r)
        return proc, status
    return proc, None


@pytest.mark.parametrize("argv", [[], ["--startup-fd", "7"], ["--bogus"],
                                  ["--startup-fd", "x", "--status-fd", "9"]])
def test_bad_command_line_exits_78(argv):
    proc, _ = run_runner(argv)
    assert proc.returncode == 78
    assert len(proc.stderr.decode().splitlines()) == 1


@pytest.mark.parametrize("data", [b"", b"{not json", b"[]", b'{"name": "x"}', b"\xff\xfe"])
def test_garbled_start_up_data_exits_78(data):
    proc, status = run_runner([], data)
    assert proc.returncode == 78
    lines = proc.stderr.decode().splitlines()
    assert len(lines) == 1 and "start-up data" in lines[0]
    assert json.loads(status)["event"] == "fatal"


def test_exits_at_once_when_the_supervisor_is_not_its_parent(tmp_path):
    data = {"name": "n", "doc_id": "d", "import_dir": str(tmp_path),
            "supervisor_pid": 1, "limits": {}, "database": None}
    proc, status = run_runner([], json.dumps(data).encode())
    assert proc.returncode == 75
    assert status == b""


def test_worker_dies_with_its_supervisor(tmp_path):
    """PR_SET_PDEATHSIG: a supervisor killed with SIGKILL takes its worker along."""
    folder = make_import_dir(str(tmp_path), "hc-imp-", {
        "main": "import time\ndef main():\n    time.sleep(1000)\n"})
    tag = "hc-test-%d-%s" % (os.getpid(), uuid.uuid4().hex[:8])
    fake_supervisor = textwrap.dedent("""
        import select, sys, time
        from himbeerecouch.sandbox.environment import worker_environment
        from himbeerecouch.sandbox.spawn import spawn_worker
        w = spawn_worker({"name": "n", "doc_id": "d", "import_dir": %r, "limits": {},
                          "database": None}, worker_environment(%r), %r)
        select.select([w.status], [], [], 10)
        print(w.pid, flush=True)
        time.sleep(1000)
    """ % (folder, tag, folder))
    sup = subprocess.Popen([sys.executable, "-c", fake_supervisor], stdout=subprocess.PIPE)
    worker_pid = None
    try:
        worker_pid = int(sup.stdout.readline())
        assert not gone(worker_pid)
        sup.kill()
        sup.wait(10)
        assert poll_until(lambda: gone(worker_pid), 5)
    finally:
        if sup.poll() is None:
            sup.kill()
            sup.wait(10)
        sup.stdout.close()
        if worker_pid is not None and not gone(worker_pid):
            kill_tree(worker_pid, tag)
        remove_import_dir(folder)
