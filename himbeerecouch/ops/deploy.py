"""Install the agent into a netboot root folder: ``make deploy NFSROOT=/path``.

Every Raspberry Pi that boots from that root then runs the agent.  Nothing
on this machine changes: the package is built in a temporary folder (with
setuptools, offline) and copied into the root, with:

- the package and the pure-Python ``couchdb`` client into
  ``usr/local/lib/python3.N/dist-packages`` (where the root's own python3
  looks, N read from its ``usr/lib/python3.N``);
- ``usr/local/bin/himbeerecouch``, a launcher for the root's ``/usr/bin/python3``;
- the service file of ``--service`` (systemd unit, enabled; supervisord
  entry; or init script), and ``etc/rspby/himbeerecouch.conf.example``;
- ``etc/rspby/server`` when ``--server`` is given (without it, the Pis wait
  for a discovery broadcast).

It says where each Pi will keep its login secret (``secret_file``, else its
state folder, which on a read-only root is often a tmpfs: then the secret,
and the adoption with it, is gone at every reboot).

psutil and setproctitle are compiled for the Pi's processor, so they come
from the root's own package manager: the script says which are missing.
It refuses ``/``, a folder that does not exist, and one that does not look
like a root file system.

    python -m himbeerecouch.ops.deploy --root /srv/nfs/pi [--server URL] [--service systemd]
"""
import argparse
import glob
import importlib.metadata
import importlib.util
import os
import re
import shutil
import subprocess
import sys
import tempfile

SERVICES = ("systemd", "supervisord", "sysv", "none")
ROOT_PACKAGES = (("python3", " (3.9 or newer)"), ("python3-psutil", ""),
                 ("python3-setproctitle", ""),
                 ("python3-rpi.gpio", " (optional: blinks the LED while a Pi waits to be found)"))
BUNDLED = ("CouchDB",)            # pure Python: the same files work on the Pi
MIN_PYTHON = (3, 9)
SOURCE_IGNORE = shutil.ignore_patterns(".git", ".venv", "node_modules", "__pycache__", "build",
                                       "*.egg-info", ".pytest_cache", "tests", "testserver",
                                       "bench", "*.pyc")
LAUNCHER = """#!/usr/bin/python3
# himbeerecouch, installed by `make deploy`.
import sys

from himbeerecouch.cli import main

sys.exit(main())
"""


class DeployError(Exception):
    """Deployment cannot go on; the message says why, in one line."""


def say(text):
    print(text, flush=True)


# ---------------------------------------------------------------- checks
def check_root(path):
    """The root folder, resolved; refuses what cannot be a netboot root."""
    if not path:
        raise DeployError("no root folder given: make deploy NFSROOT=/path/to/root")
    root = os.path.realpath(path)
    if not os.path.isdir(root):
        raise DeployError("%s is not a folder" % path)
    if root == "/" or os.path.samefile(root, "/"):
        raise DeployError("%s is this machine's own root: refusing to install into it" % path)
    missing = [d for d in ("etc", "usr") if not os.path.isdir(os.path.join(root, d))]
    if missing:
        raise DeployError("%s does not look like a root file system (no %s)"
                          % (path, " or ".join(d + "/" for d in missing)))
    return root


def root_python(root, version=None):
    """``(major, minor)`` of the root's python3, from its ``usr/lib/python3.N``."""
    if version:
        m = re.fullmatch(r"(\d+)\.(\d+)", version)
        if not m:
            raise DeployError("--python-version must look like 3.11, not %r" % version)
        found = (int(m.group(1)), int(m.group(2)))
    else:
        versions = []
        for folder in glob.glob(os.path.join(root, "usr", "lib", "python3.*")):
            m = re.fullmatch(r"python3\.(\d+)", os.path.basename(folder))
            if m and os.path.isdir(folder):
                versions.append((3, int(m.group(1))))
        if not versions:
            raise DeployError("the root has no Python 3 (no usr/lib/python3.N): install "
                              "python3 into it first")
        found = max(versions)
    if found < MIN_PYTHON:
        raise DeployError("the root's Python is %d.%d; the agent needs %d.%d or newer"
                          % (found + MIN_PYTHON))
    return found


def check_server(url):
    if url is None:
        return None
    from ..config import ConfigError, check_server_url
    try:
        url = check_server_url(url)
    except ConfigError as e:
        raise DeployError("SERVER: %s" % e) from None
    if "@" in url.split("//", 1)[1].split("/", 1)[0]:
        raise DeployError("SERVER must carry no user name or password: every Pi logs in as "
                          "itself")
    return url


def installed_packages(root):
    """Names of the packages dpkg says are installed in the root (None: no dpkg)."""
    status = os.path.join(root, "var", "lib", "dpkg", "status")
    try:
        with open(status, errors="replace") as f:
            text = f.read()
    except OSError:
        return None
    names = set()
    for stanza in text.split("\n\n"):
        fields = dict(re.findall(r"^([A-Za-z-]+): (.*)$", stanza, re.M))
        if fields.get("Status", "").endswith(" installed") and "Package" in fields:
            names.add(fields["Package"])
    return names


# ---------------------------------------------------------------- building
def build(source, stage):
    """The package as it installs (subpackages mapped, metadata as .egg-info) into ``stage``."""
    if importlib.util.find_spec("setuptools") is None:
        raise DeployError("building needs setuptools in %s: pip install setuptools"
                          % sys.executable)
    work = tempfile.mkdtemp(prefix="himbeerecouch-build-")
    try:
        tree = os.path.join(work, "src")
        shutil.copytree(source, tree, ignore=SOURCE_IGNORE, symlinks=True)
        egg = os.path.join(work, "egg")
        os.mkdir(egg)
        # setuptools alone, offline: no pip, no wheel, no download.
        result = subprocess.run(
            [sys.executable, "-c", "import setuptools; setuptools.setup()", "-q",
             "egg_info", "--egg-base", egg, "build_py", "--build-lib", stage],
            cwd=tree, capture_output=True, text=True, env=dict(os.environ,
                                                               PYTHONDONTWRITEBYTECODE="1"))
        if result.returncode != 0:
            raise DeployError("building the package failed: %s"
                              % (result.stderr.strip().splitlines() or ["?"])[-1])
        info = glob.glob(os.path.join(egg, "*.egg-info"))[0]
        from .. import __version__
        shutil.copytree(info, os.path.join(stage, "himbeerecouch-%s.egg-info" % __version__))
    finally:
        shutil.rmtree(work, ignore_errors=True)


def bundle(name, stage):
    """Copy the installed files of the pure-Python distribution ``name`` into ``stage``."""
    try:
        dist = importlib.metadata.distribution(name)
    except importlib.metadata.PackageNotFoundError:
        raise DeployError("%s is not installed here (pip install %s): it is copied into "
                          "the root" % (name, name)) from None
    for entry in dist.files or []:
        parts = entry.parts
        if parts[0] == ".." or "__pycache__" in parts or entry.suffix == ".pyc":
            continue    # console scripts outside site-packages, byte code
        source = dist.locate_file(entry)
        if not os.path.isfile(source):
            continue
        target = os.path.join(stage, *parts)
        os.makedirs(os.path.dirname(target), exist_ok=True)
        shutil.copyfile(source, target)


def distribution_prefix(entry):
    """``himbeerecouch-2.0.0.egg-info`` -> ``himbeerecouch``: what an older version looks like."""
    m = re.match(r"(.+?)-\d[^-]*(?:-py[\d.]+)?\.(?:egg-info|dist-info)$", entry)
    return m.group(1).lower() if m else None


def install_stage(stage, target):
    """Replace in ``target`` whatever ``stage`` holds, older versions' metadata included."""
    os.makedirs(target, exist_ok=True)
    new = os.listdir(stage)
    names = {distribution_prefix(e) for e in new} - {None}
    for entry in os.listdir(target):
        if entry in new or distribution_prefix(entry) in names:
            path = os.path.join(target, entry)
            if os.path.isdir(path) and not os.path.islink(path):
                shutil.rmtree(path)
            else:
                os.unlink(path)
    for entry in new:
        source, dest = os.path.join(stage, entry), os.path.join(target, entry)
        if os.path.isdir(source):
            shutil.copytree(source, dest)
        else:
            shutil.copy2(source, dest)


# ---------------------------------------------------------------- files in etc/
def put(root, relative, text=None, source=None, mode=0o644, keep=False):
    """Write one file of the root (``keep``: leave an existing one alone)."""
    path = os.path.join(root, relative)
    if keep and os.path.exists(path):
        return False
    os.makedirs(os.path.dirname(path), mode=0o755, exist_ok=True)
    if source is not None:
        shutil.copyfile(source, path)
    else:
        with open(path, "w") as f:
            f.write(text)
    os.chmod(path, mode)
    return True


def install_service(root, etc, service):
    if service == "systemd":
        unit = "etc/systemd/system/himbeerecouch.service"
        put(root, unit, source=os.path.join(etc, "systemd", "system", "himbeerecouch.service"))
        # What `systemctl enable` does: a link in the target's .wants folder.
        wants = os.path.join(root, "etc", "systemd", "system", "multi-user.target.wants")
        os.makedirs(wants, exist_ok=True)
        link = os.path.join(wants, "himbeerecouch.service")
        if os.path.lexists(link):
            os.unlink(link)
        os.symlink("/" + unit, link)
        return ["/" + unit + " (enabled)"]
    if service == "supervisord":
        entry = "etc/supervisor/conf.d/himbeerecouch.conf"
        put(root, entry, source=os.path.join(etc, "supervisor", "conf.d", "himbeerecouch.conf"))
        return ["/" + entry + " (the root needs the package supervisor)"]
    if service == "sysv":
        put(root, "etc/init.d/himbeerecouch", source=os.path.join(etc, "init.d", "himbeerecouch"),
            mode=0o755)
        put(root, "etc/default/himbeerecouch",
            source=os.path.join(etc, "default", "himbeerecouch"), keep=True)
        return ["/etc/init.d/himbeerecouch (enable it in the root: update-rc.d himbeerecouch "
                "defaults)"]
    return []


def old_agent_entries(root):
    """Files of the root that start the old agent (it must not run beside this one)."""
    found = []
    for pattern in ("etc/supervisor/conf.d/*.conf", "etc/init.d/*",
                    "etc/systemd/system/*.service"):
        for path in glob.glob(os.path.join(root, pattern)):
            if os.path.basename(path).startswith("himbeerecouch"):
                continue
            try:
                with open(path, errors="replace") as f:
                    text = f.read()
            except OSError:
                continue
            if "himbeerecouch" in text or "rspby" in text:
                found.append("/" + os.path.relpath(path, root))
    return found


# ---------------------------------------------------------------- the whole
def secret_note(root):
    """Where the Pis keep their login secrets, as the root's configuration says."""
    import configparser

    parser = configparser.ConfigParser(interpolation=None)
    try:
        parser.read(os.path.join(root, "etc/rspby/himbeerecouch.conf"))
    except configparser.Error:
        pass
    get = (lambda key: parser.get("himbeerecouch", key, fallback=None)) \
        if parser.has_section("himbeerecouch") else (lambda key: None)
    if (get("login") or "").strip() == "legacy":
        return "login = legacy: the Pis log in with the legacy password only (not adoptable)"
    if get("secret_file"):
        return ("login secret: each Pi keeps its own in %s (storage that Pi alone reads, "
                "surviving reboots)" % get("secret_file"))
    return ("login secret: each Pi keeps its own in its state folder (%s); if that does not "
            "survive a reboot (a tmpfs on a read-only root), set secret_file in "
            "/etc/rspby/himbeerecouch.conf to persistent storage of each Pi's own, or the "
            "Pis must be adopted again after every boot (README: netboot)"
            % (get("state_dir") or "/var/lib/himbeerecouch"))


def deploy(root, source, server=None, service="systemd", python_version=None):
    root = check_root(root)
    major, minor = root_python(root, python_version)
    server = check_server(server)
    etc = os.path.join(source, "etc")
    if not os.path.isfile(os.path.join(source, "setup.cfg")) or not os.path.isdir(etc):
        raise DeployError("%s is not the himbeerecouch source folder" % source)
    target_rel = "usr/local/lib/python%d.%d/dist-packages" % (major, minor)
    stage = tempfile.mkdtemp(prefix="himbeerecouch-stage-")
    try:
        build(source, stage)
        for name in BUNDLED:
            bundle(name, stage)
        install_stage(stage, os.path.join(root, target_rel))
    finally:
        shutil.rmtree(stage, ignore_errors=True)
    say("installed the agent into %s/%s" % (root, target_rel))
    put(root, "usr/local/bin/himbeerecouch", LAUNCHER, mode=0o755)
    say("installed /usr/local/bin/himbeerecouch")
    put(root, "etc/rspby/himbeerecouch.conf.example",
        source=os.path.join(etc, "rspby", "himbeerecouch.conf.example"))
    for line in install_service(root, etc, service):
        say("installed " + line)
    if server:
        put(root, "etc/rspby/server", server + "\n")
        say("server file /etc/rspby/server: %s" % server)
    elif os.path.exists(os.path.join(root, "etc/rspby/server")):
        say("server file /etc/rspby/server kept as it is")
    else:
        say("no server file: every Pi waits for `himbeerecouch adopt ADMIN_URL` (or give "
            "SERVER=)")
    say(secret_note(root))
    for path in old_agent_entries(root):
        say("warning: %s seems to start the old agent; remove it, or both will run" % path)
    have = installed_packages(root)
    say("the root needs these packages from its own package manager: %s"
        % ", ".join(name + note for name, note in ROOT_PACKAGES))
    if have is not None:
        missing = [name for name, _ in ROOT_PACKAGES if name not in have]
        if missing:
            say("missing in the root: %s; e.g. chroot %s apt-get install %s"
                % (", ".join(missing), root, " ".join(missing)))
        else:
            say("all of them are installed in the root")
    return 0


def main(argv=None):
    p = argparse.ArgumentParser(prog="python -m himbeerecouch.ops.deploy",
                                description="Install the agent into a netboot root folder.")
    p.add_argument("--root", required=True, help="the root folder (NFSROOT)")
    p.add_argument("--server", help="server URL for etc/rspby/server (SERVER)")
    p.add_argument("--service", choices=SERVICES, default="systemd",
                   help="how the Pis start the agent (default: %(default)s)")
    p.add_argument("--source", default=os.path.dirname(os.path.dirname(os.path.abspath(
        __file__))), help="the himbeerecouch source folder (default: this one)")
    p.add_argument("--python-version", help="the root's Python, e.g. 3.11 (default: found in "
                                            "its usr/lib)")
    args = p.parse_args(argv)
    try:
        return deploy(args.root, args.source, args.server or None, args.service,
                      args.python_version)
    except DeployError as e:
        print("deploy: %s" % e, file=sys.stderr)
        return 1
    except OSError as e:
        print("deploy: %s: %s" % (e.filename or "", e.strerror or e), file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
