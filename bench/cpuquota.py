"""A CPU quota for the bench's Pi-class phase: a cgroup with a CFS bandwidth limit.

cgroup v2 (``cpu.max``) where this process's cgroup can have a child with
the cpu controller, else cgroup v1's cpu controller (``cpu.cfs_quota_us``,
the same kernel mechanism).  Processes join by writing their pid into the
group's ``cgroup.procs``; children inherit the group.  :func:`create` raises
:class:`QuotaUnavailable`, with the reason, where neither is allowed.
"""
import os
import secrets

PERIOD_US = 10000   # short, so that a throttled start is slowed evenly, not in 100 ms bursts


class QuotaUnavailable(RuntimeError):
    """This machine gives the bench no CPU quota; the message says why."""


def _own_paths():
    """{controller or "" (v2): path of this process's cgroup}."""
    paths = {}
    with open("/proc/self/cgroup") as f:
        for line in f:
            _, controllers, path = line.rstrip("\n").split(":", 2)
            for name in controllers.split(",") if controllers else [""]:
                paths[name] = path
    return paths


def _mounts():
    """[(type, mount point, options)] of the cgroup file systems."""
    found = []
    with open("/proc/self/mounts") as f:
        for line in f:
            _, point, kind, options = line.split()[:4]
            if kind in ("cgroup", "cgroup2"):
                found.append((kind, point, options.split(",")))
    return found


def _write(path, text):
    with open(path, "w") as f:
        f.write(text)


class CpuQuota:
    """One cgroup limited to ``cores`` of CPU time (0.1 = a tenth of one core)."""

    def __init__(self, folder, version):
        self.folder, self.version = folder, version

    @property
    def procs(self):
        return os.path.join(self.folder, "cgroup.procs")

    def add(self, pid):
        _write(self.procs, str(pid))

    def enter(self):
        """For Popen(preexec_fn=...): the child joins before it execs."""
        self.add(os.getpid())

    def close(self):
        """Remove the group (every process in it must have ended)."""
        try:
            os.rmdir(self.folder)
        except OSError:
            pass


def create(cores):
    """A new :class:`CpuQuota` of ``cores``; QuotaUnavailable if none can be made."""
    own = _own_paths()
    reasons = []
    for kind, point, options in _mounts():
        if kind == "cgroup2" and "" in own:
            parent = os.path.join(point, own[""].lstrip("/"))
            version, control = 2, "cpu.max"
        elif kind == "cgroup" and "cpu" in options and "cpu" in own:
            parent = os.path.join(point, own["cpu"].lstrip("/"))
            version, control = 1, "cpu.cfs_quota_us"
        else:
            continue
        folder = os.path.join(parent, "himbeerecouch-bench-%s" % secrets.token_hex(3))
        try:
            os.mkdir(folder)
        except OSError as e:
            reasons.append("%s: %s" % (parent, e.strerror))
            continue
        quota = CpuQuota(folder, version)
        try:
            if not os.path.exists(os.path.join(folder, control)):
                raise OSError(0, "no cpu controller in %s" % folder)
            if version == 2:
                _write(os.path.join(folder, control),
                       "%d %d" % (int(cores * PERIOD_US), PERIOD_US))
            else:
                _write(os.path.join(folder, "cpu.cfs_period_us"), str(PERIOD_US))
                _write(os.path.join(folder, control), str(int(cores * PERIOD_US)))
        except OSError as e:
            quota.close()
            reasons.append("%s: %s" % (folder, e.strerror))
            continue
        return quota
    raise QuotaUnavailable("no cgroup with a CPU quota can be made here (%s)"
                           % ("; ".join(reasons) or "no cgroup file system mounted"))
