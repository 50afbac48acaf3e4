"""One agent per device on a machine: a second one must never harm the first.

A service runs the device; someone starts a second agent for it by hand with
another state folder.  The second one refuses with one line naming the first
one's pid, and every worker of the first keeps running.  Leftovers are cleaned
at start only when the agent that made them is dead.
"""
import signal
import subprocess
import sys

import psutil
import pytest

from helpers import alive, put_doc, wait_for
from himbeerecouch.agent.devicelock import DeviceBusy, DeviceLock

GRANDCHILD = ("import subprocess, time\n"
              "def main():\n"
              "    p = subprocess.Popen(['sleep', '1000'], start_new_session=True)\n"
              "    log('grandchild', p.pid)\n"
              "    while True:\n        time.sleep(0.1)\n")


def start_logger(db, device, start_agent):
    """An agent running a worker with a setsid grandchild: (agent, worker, grandchild)."""
    put_doc(db.admin, "logger", type=device.macid, name="temp logger", code=GRANDCHILD)
    agent = start_agent(device)
    grandchild = int(agent.wait_line(r"\[temp logger\] grandchild \d+").rsplit(" ", 1)[1])
    return agent, agent.wait_worker("logger"), grandchild


def test_the_lock_names_its_holder_and_dies_with_it():
    macid = 0xB827EB000000 + 4242
    holder = subprocess.Popen(
        [sys.executable, "-c",
         "import sys, time\nfrom himbeerecouch.agent.devicelock import DeviceLock\n"
         "lock = DeviceLock(%d).acquire()\nprint('held', flush=True)\ntime.sleep(60)\n" % macid],
        stdout=subprocess.PIPE)
    try:
        assert holder.stdout.readline() == b"held\n"
        with pytest.raises(DeviceBusy) as busy:
            DeviceLock(macid).acquire()
        assert busy.value.pid == holder.pid
        assert "pid %d" % holder.pid in str(busy.value)
        holder.send_signal(signal.SIGKILL)
        holder.wait(10)
        lock = DeviceLock(macid).acquire()     # the kernel freed it with its holder
        lock.close()
    finally:
        if holder.poll() is None:
            holder.kill()
            holder.wait(10)
        holder.stdout.close()


def test_a_second_agent_refuses_and_the_first_keeps_every_worker(db, device, start_agent,
                                                                  tmp_path):
    first, worker, grandchild = start_logger(db, device, start_agent)

    second = start_agent(device, state_dir=tmp_path / "debugging")
    assert second.proc.wait(30) != 0               # it exits by itself, refusing
    second._reader.join(5)
    refusal = second.find_lines(r"another himbeerecouch agent for device %d is running"
                                % device.macid)
    assert len(refusal) == 1 and ("pid %d" % first.pid) in refusal[0], second.output()
    assert not second.find_lines(r"left behind|started \(pid|\[temp logger\]")

    assert alive(worker) and alive(grandchild)
    assert first.worker("logger").pid == worker
    assert not first.find_lines(r"temp logger.*(killed|exited)")
    assert first.proc.poll() is None


def test_leftovers_of_a_killed_agent_are_cleaned_by_the_next(db, device, start_agent,
                                                             tmp_path):
    first, worker, grandchild = start_logger(db, device, start_agent)
    # Kill the guardian first, then the agent: nothing cleans up after it, and
    # the setsid grandchild (which PDEATHSIG does not reach) is left behind.
    guardian = [p for p in psutil.Process(first.pid).children()
                if "guardian" in " ".join(p.cmdline())]
    assert len(guardian) == 1
    guardian[0].kill()
    wait_for(lambda: not alive(guardian[0].pid), message="guardian killed")
    first.proc.kill()
    first.proc.wait(10)
    wait_for(lambda: not alive(worker), message="worker died with its supervisor")
    assert alive(grandchild)

    second = start_agent(device, state_dir=tmp_path / "after-a-crash")
    second.wait_line(r"ended 1 process\(es\) left behind by an earlier run: %d" % grandchild)
    wait_for(lambda: not alive(grandchild), message="leftover ended")
    second.wait_worker("logger")
    second.wait_line(r"\[temp logger\] grandchild \d+")
