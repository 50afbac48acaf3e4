"""The fault and bad-input suite (issue 6): shared fixtures and the summary line.

Every test here injects one fault into the real agent (`himbeerecouch run`),
the real test server and real processes, and checks what a user would:
the supervisor and the other workers carry on, the error shows in the log and
the heartbeat, and nothing is left behind.

At the end of a run that included any of these tests, one line says how
many faults the agent survived: ``faults: N survived, M failed``.  Tests that
could not run here (skipped) are named on a line of their own before it:
they count neither as survived nor as failed.
"""
import os
import sys

import pytest

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)

from faultkit import Provisioned  # noqa: E402

_outcomes = {}       # nodeid -> "survived" / "failed" / "skipped: why"


def _is_fault_test(report, config):
    path = report.nodeid.split("::", 1)[0]
    full = os.path.abspath(os.path.join(str(config.rootpath), path))
    return full.startswith(HERE + os.sep)


def pytest_runtest_logreport(report):
    config = _config[0] if _config else None
    if config is None or not _is_fault_test(report, config):
        return
    previous = _outcomes.get(report.nodeid)
    if report.failed:
        _outcomes[report.nodeid] = "failed"
    elif report.skipped and previous != "failed":
        reason = report.longrepr[2] if isinstance(report.longrepr, tuple) else str(report.longrepr)
        _outcomes[report.nodeid] = "skipped: %s" % reason
    elif report.when == "call" and report.passed and previous is None:
        _outcomes[report.nodeid] = "survived"


_config = []


def pytest_configure(config):
    _config[:] = [config]


@pytest.hookimpl(trylast=True)
def pytest_terminal_summary(terminalreporter, exitstatus, config):
    if not _outcomes:
        return
    values = list(_outcomes.values())
    survived = values.count("survived")
    failed = values.count("failed")
    for nodeid, outcome in sorted(_outcomes.items()):
        if outcome.startswith("skipped"):
            terminalreporter.write_line("fault test not run here: %s (%s)" % (nodeid, outcome[9:]))
    terminalreporter.write_line("faults: %d survived, %d failed" % (survived, failed))


# ------------------------------------------------------------------ fixtures
@pytest.fixture(scope="module")
def mod_db(couch):
    """A database and a device user shared by the tests of one module."""
    p = Provisioned(couch)
    try:
        yield p
    finally:
        p.close()
