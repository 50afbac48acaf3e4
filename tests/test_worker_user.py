"""``--worker-user``: workers run as an unprivileged user (issue 2, point 5).

The supervisor runs as root and starts each worker as that user.  For that,
the user must be able to execute the interpreter and read the installed
package: the test suite's own virtual environment may live where other users
cannot go (its interpreter under /root), so a session fixture builds one that
every user can read, from Debian's /usr/bin/python3, in a folder under /tmp,
and installs this project into it (not editable, dependencies from the
package index).  The agent under test runs from there.
"""
import os
import pwd
import shutil
import stat
import subprocess
import tempfile

import psutil
import pytest

from helpers import put_doc, wait_for

from himbeerecouch.agent import cache

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SYSTEM_PYTHON = "/usr/bin/python3"
# What `pip install .` needs of the source tree.
SOURCE_PARTS = ("pyproject.toml", "setup.cfg", "README.md", "himbeerecouch", "runner", "sandbox")

needs_root = pytest.mark.skipif(os.geteuid() != 0, reason="switching users needs root "
                                                         "(the CI runs as root)")


def _searchable_by_all(path):
    while True:
        if not os.stat(path).st_mode & stat.S_IXOTH:
            return False
        if path == "/":
            return True
        path = os.path.dirname(path)


@pytest.fixture(scope="session")
def world_venv():
    """``(folder, python)``: a world-readable venv with this project installed."""
    if os.geteuid() != 0:
        pytest.skip("switching users needs root")
    if not os.access(SYSTEM_PYTHON, os.X_OK):
        pytest.fail("%s is needed to build a venv every user can run" % SYSTEM_PYTHON)
    base = tempfile.mkdtemp(prefix="hbc-worker-user-", dir="/tmp")
    old_umask = os.umask(0o022)     # what pip installs must be readable by all
    try:
        os.chmod(base, 0o755)
        assert _searchable_by_all(base), "%s must be reachable by every user" % base
        # A copy of the working tree (uncommitted changes included): pip
        # builds in the source folder and would leave build/ in the repository.
        src = os.path.join(base, "src")
        os.mkdir(src)
        for part in SOURCE_PARTS:
            origin = os.path.join(ROOT, part)
            if os.path.isdir(origin):
                shutil.copytree(origin, os.path.join(src, part),
                                ignore=shutil.ignore_patterns("__pycache__", "*.egg-info"))
            else:
                shutil.copy(origin, src)
        venv = os.path.join(base, "venv")
        for command in ([SYSTEM_PYTHON, "-m", "venv", venv],
                        [os.path.join(venv, "bin", "pip"), "install", "--quiet",
                         "--disable-pip-version-check", "--no-input", src]):
            done = subprocess.run(command, cwd=base, capture_output=True, text=True,
                                  timeout=600, stdin=subprocess.DEVNULL)
            assert done.returncode == 0, "%s failed:\n%s%s" % (" ".join(command), done.stdout,
                                                                done.stderr)
        shutil.rmtree(src)
        os.umask(old_umask)
        yield base, os.path.join(venv, "bin", "python")
    finally:
        os.umask(old_umask)
        shutil.rmtree(base, ignore_errors=True)


@pytest.fixture
def nobody():
    return pwd.getpwnam("nobody")


WHO = """
import os, time
def main():
    log("uid", os.getuid(), "gid", os.getgid(), "groups", sorted(os.getgroups()))
    log("folder", os.path.dirname(os.path.abspath(__file__)))
    while not os.path.exists(%(cache)r) and not should_quit():
        time.sleep(0.05)
    for what, path, read in (("cache", %(cache)r, lambda p: open(p).read()),
                             ("state", %(state)r, os.listdir),
                             ("imports", %(imports)r, os.listdir)):
        try:
            read(path)
            log(what, "readable")
        except OSError as e:
            log(what, type(e).__name__)
    log("who started")
    while not should_quit():
        time.sleep(0.05)
"""


def who_code(state, macid):
    """A worker that says who it is, tries to read the supervisor's files,
    then runs until asked to quit (so that the test can look at it)."""
    return WHO % {"cache": cache.cache_path(state, macid), "state": state,
                  "imports": os.path.join(state, "imports")}


@needs_root
def test_worker_runs_as_the_worker_user(db, device, start_agent, world_venv, nobody):
    base, python = world_venv
    state = tempfile.mkdtemp(prefix="state-", dir=base)     # 0700: the agent opens it up
    put_doc(db.admin, "who", type=device.macid, name="who", code=who_code(state, device.macid))
    agent = start_agent(device, args=["--worker-user", "nobody"], state_dir=state,
                        python=python)
    agent.wait_line(r"\[who\] uid %d gid %d groups " % (nobody.pw_uid, nobody.pw_gid))
    folder = agent.wait_line(r"\[who\] folder ").split(" folder ", 1)[1]
    agent.wait_line(r"\[who\] who started")
    # Its import folder is its own, and private.
    st = os.stat(folder)
    assert st.st_uid == nobody.pw_uid
    assert stat.S_IMODE(st.st_mode) == 0o700
    assert os.path.dirname(folder) == os.path.join(state, "imports")
    # The supervisor's state is not readable: not the document cache, not the
    # listing of the state folder or of the other workers' import folders.
    assert agent.find_lines(r"\[who\] cache PermissionError")
    assert agent.find_lines(r"\[who\] state PermissionError")
    assert agent.find_lines(r"\[who\] imports PermissionError")
    assert stat.S_IMODE(os.stat(state).st_mode) == 0o711
    # The process itself, as the kernel sees it.
    proc = agent.worker("who")
    assert proc.uids().real == proc.uids().effective == nobody.pw_uid
    assert proc.gids().real == proc.gids().effective == nobody.pw_gid
    assert psutil.Process(agent.pid).uids().real == 0       # the supervisor stays root
    # Its folder goes away with it.
    put_doc(db.admin, "who", type=device.macid, name="who", code="def main():\n    pass\n")
    wait_for(lambda: not os.path.exists(folder), message="import folder removed")


@needs_root
def test_unreachable_state_folder_is_a_clear_error(db, device, start_agent, world_venv,
                                                   tmp_path):
    """pytest's tmp_path lies under /tmp/pytest-of-root (0700): nobody cannot get in."""
    _, python = world_venv
    closed = str(tmp_path)
    while os.path.dirname(closed) != "/tmp":
        closed = os.path.dirname(closed)
    assert not os.stat(closed).st_mode & stat.S_IXOTH
    agent = start_agent(device, args=["--worker-user", "nobody"], state_dir=tmp_path / "state",
                        python=python)
    assert agent.proc.wait(60) == 1
    agent.stop()        # collects the rest of its output
    out = agent.output()
    assert "worker user nobody cannot enter %s" % (tmp_path / "state" / "imports") in out, out
    assert "Traceback" not in out


def test_unknown_worker_user_is_a_clear_error(device, start_agent):
    agent = start_agent(device, args=["--worker-user", "no-such-user-here"])
    assert agent.proc.wait(60) != 0
    agent.stop()
    out = agent.output()
    assert "worker user 'no-such-user-here' does not exist" in out, out
    assert "Traceback" not in out
