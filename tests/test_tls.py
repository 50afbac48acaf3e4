"""HTTPS with the lab's own certificate authority (``--ca-file``), end to end.

The test makes a CA and a certificate for 127.0.0.1 with the ``openssl``
command, and puts a TLS terminator (Python's ssl module) in front of the test
server.  The agent, its workers' ``get_database()`` and the operator commands
then talk HTTPS to it; with a CA that did not sign the certificate, each says
so in one line that names the server.
"""
import json
import os
import selectors
import shutil
import signal
import socket
import ssl
import subprocess
import tempfile
import threading
import urllib.parse

import pytest

from cli_helpers import assert_one_line_error, run_cli
from helpers import put_doc, url_with_credentials, wait_for
from test_worker_user import needs_root, nobody, world_venv  # noqa: F401 - fixtures

from himbeerecouch import config as configuration

OPENSSL = "/usr/bin/openssl"


def openssl(*args, cwd):
    subprocess.run([OPENSSL, *args], cwd=cwd, check=True, capture_output=True, timeout=60)


def make_ca(folder, name):
    """A self-signed CA in ``folder``: (``<name>.pem``, ``<name>.key``)."""
    openssl("req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1",
            "-nodes", "-keyout", name + ".key", "-out", name + ".pem", "-days", "2",
            "-subj", "/CN=%s" % name, cwd=folder)
    return str(folder / (name + ".pem")), str(folder / (name + ".key"))


@pytest.fixture(scope="module")
def certificates(tmp_path_factory):
    """``ca`` (signed the server's certificate), ``other_ca`` (did not), and
    the server's ``cert`` and ``key`` (for IP address 127.0.0.1)."""
    folder = tmp_path_factory.mktemp("tls")
    ca, ca_key = make_ca(folder, "lab-ca")
    other_ca, _ = make_ca(folder, "other-ca")
    (folder / "server.ext").write_text("subjectAltName = IP:127.0.0.1\n"
                                       "basicConstraints = CA:FALSE\n"
                                       "extendedKeyUsage = serverAuth\n")
    openssl("req", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes",
            "-keyout", "server.key", "-out", "server.csr", "-subj", "/CN=127.0.0.1", cwd=folder)
    openssl("x509", "-req", "-in", "server.csr", "-CA", ca, "-CAkey", ca_key,
            "-CAcreateserial", "-out", "server.pem", "-days", "2",
            "-extfile", "server.ext", cwd=folder)
    return {"ca": ca, "other_ca": other_ca,
            "cert": str(folder / "server.pem"), "key": str(folder / "server.key")}


class TlsTerminator:
    """HTTPS on a free 127.0.0.1 port, forwarded as plain bytes to ``backend``.

    One thread accepts; one thread per connection moves bytes both ways as
    they come (the continuous changes feed must stream), with a selector, so
    that no TLS socket is ever used by two threads at once.
    """

    def __init__(self, backend, cert, key):
        self.backend = backend
        self.context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
        self.context.load_cert_chain(cert, key)
        self.listener = socket.create_server(("127.0.0.1", 0))
        self.listener.settimeout(0.2)
        self.port = self.listener.getsockname()[1]
        self.url = "https://127.0.0.1:%d" % self.port
        self.stopping = threading.Event()
        self.threads = []
        self.sockets = set()
        self.lock = threading.Lock()
        self._start(self._accept)

    def _start(self, target, *args):
        thread = threading.Thread(target=target, args=args, daemon=True)
        with self.lock:
            self.threads.append(thread)
        thread.start()

    def _keep(self, sock):
        with self.lock:
            self.sockets.add(sock)
        return sock

    def _accept(self):
        while not self.stopping.is_set():
            try:
                client, _ = self.listener.accept()
            except socket.timeout:
                continue
            except OSError:
                return          # closed at teardown
            self._start(self._serve, self._keep(client))

    def _serve(self, raw):
        opened = [raw]
        try:
            raw.settimeout(10)
            client = self._keep(self.context.wrap_socket(raw, server_side=True))
            opened.append(client)
            backend = self._keep(socket.create_connection(self.backend, timeout=10))
            opened.append(backend)
            self._pump(client, backend)
        except OSError:
            pass                # a client that rejected our certificate, a closed peer
        finally:
            for sock in opened:
                sock.close()

    def _pump(self, client, backend):
        other = {client: backend, backend: client}
        with selectors.DefaultSelector() as selector:
            for sock in other:
                selector.register(sock, selectors.EVENT_READ)
            while not self.stopping.is_set():
                for key, _ in selector.select(0.2):
                    source = key.fileobj
                    data = source.recv(65536)
                    if not data:
                        if source is backend:
                            # close_notify, as servers send: the client's pooled
                            # connection then reads as closed, not as cut.
                            client.unwrap()
                        return
                    other[source].sendall(data)
                    # Bytes ssl already decrypted are not seen by the selector.
                    while source is client and client.pending():
                        other[source].sendall(client.recv(65536))

    def close(self):
        self.stopping.set()
        self.listener.close()
        with self.lock:
            threads, sockets = list(self.threads), list(self.sockets)
        for sock in sockets:
            try:
                sock.close()
            except OSError:
                pass
        for thread in threads:
            thread.join(10)


@pytest.fixture
def tls(couch, certificates):
    """The test server behind HTTPS: ``tls.url``, ``tls.port``, plus the certificates."""
    backend = urllib.parse.urlsplit(couch.url)
    terminator = TlsTerminator((backend.hostname, backend.port),
                               certificates["cert"], certificates["key"])
    terminator.certificates = certificates
    try:
        yield terminator
    finally:
        terminator.close()


def untrusted(tls, ca_file):
    """The one line that says the server's certificate does not verify with ``ca_file``."""
    return "%s: the server's certificate does not verify with %s: " % (tls.url, ca_file)


WORKER = """
import time

def main():
    db = get_database()
    doc = db.get("written-over-https") or {"_id": "written-over-https"}
    doc["by"] = "worker"
    db.save(doc)
    log("read back", db["written-over-https"]["by"])
    while not should_quit():
        time.sleep(0.05)
"""


def test_agent_and_its_worker_use_the_lab_ca(db, device, start_agent, tls, tmp_path):
    put_doc(db.admin, "tls-worker", type=device.macid, name="tls-worker", code=WORKER)
    state = tmp_path / "state"
    state.mkdir()
    # The configuration file's key, this time (the other tests give --ca-file).
    (state / "himbeerecouch.conf").write_text(
        "[himbeerecouch]\nca_file = %s\n" % tls.certificates["ca"])
    agent = start_agent(device, url=tls.url, state_dir=state)
    # The worker's own connection verified with the CA: it wrote and read back.
    agent.wait_line(r"read back worker", timeout=30)
    assert db.admin["written-over-https"]["by"] == "worker"
    wait_for(lambda: (db.admin.get("%d_heartbeat" % device.macid) or {}).get("running_ids")
             == ["tls-worker"], timeout=20, message="a heartbeat over HTTPS lists the worker")
    assert "does not verify" not in agent.output()
    # Another CA file on SIGHUP waits for the next start: every connection,
    # the workers' included, keeps verifying with the same one.
    (state / "himbeerecouch.conf").write_text(
        "[himbeerecouch]\nca_file = %s\n" % tls.certificates["other_ca"])
    mark = agent.mark()
    agent.signal(signal.SIGHUP)
    agent.wait_line(r"--ca-file changes take effect at the next start", after=mark)
    put_doc(db.admin, "tls-worker", type=device.macid, name="tls-worker",
            code=WORKER.replace("read back", "again read back"))
    agent.wait_line(r"again read back worker", timeout=30, after=mark)
    assert "does not verify" not in agent.output()
    assert "could not write" not in agent.output() and "cannot write" not in agent.output()


@needs_root
def test_worker_user_needs_to_read_the_ca_file(db, device, start_agent, tls, world_venv,
                                               nobody):
    """The CA file where the worker user cannot read it is a clear error at start;
    a readable copy lets its workers verify the server as the supervisor does."""
    base, python = world_venv
    closed = tls.certificates["ca"]            # under /tmp/pytest-of-root (0700)
    agent = start_agent(device, url=tls.url, python=python,
                        state_dir=tempfile.mkdtemp(prefix="state-", dir=base),
                        args=["--worker-user", "nobody", "--ca-file", closed])
    assert agent.proc.wait(60) == 1
    agent.stop()
    out = agent.output()
    assert "worker user nobody cannot read the CA file %s (Permission denied)" % closed in out
    assert "Traceback" not in out
    readable = os.path.join(base, "lab-ca.pem")
    shutil.copy(closed, readable)
    os.chmod(readable, 0o644)
    put_doc(db.admin, "tls-worker", type=device.macid, name="tls-worker", code=WORKER)
    agent = start_agent(device, url=tls.url, python=python,
                        state_dir=tempfile.mkdtemp(prefix="state-", dir=base),
                        args=["--worker-user", "nobody", "--ca-file", readable])
    agent.wait_line(r"read back worker", timeout=30)


@pytest.mark.parametrize("which", ["other_ca", "system"])
def test_agent_says_once_that_the_certificate_does_not_verify(device, start_agent, tls, which):
    args = ["--ca-file", tls.certificates["other_ca"]] if which == "other_ca" else []
    expected = untrusted(tls, tls.certificates["other_ca"] if which == "other_ca"
                         else "the system's certificate authorities")
    agent = start_agent(device, url=tls.url, args=args)
    agent.wait_line("database unreachable: .*" + expected.replace(".", r"\."), timeout=20)
    agent.wait_line("cannot write the heartbeat.*" + expected.replace(".", r"\."), timeout=20)
    assert agent.proc.poll() is None, "the agent keeps running"
    assert "Traceback" not in agent.output()


def test_operator_commands_over_https(couch, db, device, start_agent, tls, tmp_path):
    admin = url_with_credentials(tls.url, couch.admin_name, couch.admin_password)
    ca = ["--database", db.name, "--ca-file", tls.certificates["ca"]]
    result = run_cli("provision", admin, *ca)
    assert result.returncode == 0, result.stderr
    agent = start_agent(device, url=tls.url, args=["--ca-file", tls.certificates["ca"]])
    code = tmp_path / "main.py"
    code.write_text("import time\ndef main():\n    log('pushed over https')\n"
                    "    while not should_quit():\n        time.sleep(0.05)\n")
    result = run_cli("push", admin, *ca, "--device", device.macid, "--name", "pushed",
                     "--code", code)
    assert result.returncode == 0, result.stderr
    agent.wait_line("pushed over https", timeout=30)
    result = run_cli("exec", admin, *ca, "--device", device.macid, "--wait", "30",
                     "--", "echo", "hello over https")
    assert (result.returncode, result.stdout) == (0, "hello over https\n"), result.stderr

    def status():
        result = run_cli("status", admin, *ca, "--json")
        assert result.returncode == 0, result.stderr
        return [row for row in json.loads(result.stdout) if row.get("macid") == device.macid]
    wait_for(status, timeout=20, message="the device in status over https")
    # Managing operators is an operator command too (it has no --database).
    result = run_cli("operator", "list", admin, "--ca-file", tls.certificates["ca"])
    assert result.returncode == 0, result.stderr


def test_operator_command_with_another_ca_fails_in_one_line(couch, db, tls):
    admin = url_with_credentials(tls.url, couch.admin_name, couch.admin_password)
    other = tls.certificates["other_ca"]
    for args, ca_file in ((["--ca-file", other], other),
                          ([], "the system's certificate authorities")):
        err = assert_one_line_error(run_cli("status", admin, "--database", db.name, *args),
                                    couch.admin_password)
        assert untrusted(tls, ca_file) in err, err
    err = assert_one_line_error(run_cli("status", admin, "--database", db.name,
                                        "--ca-file", "/nonexistent/ca.pem"))
    assert "cannot use /nonexistent/ca.pem: No such file or directory" in err, err


def test_an_unusable_ca_file_is_a_configuration_error(tmp_path):
    not_pem = tmp_path / "not-a-ca.pem"
    not_pem.write_text("hello\n")
    for path, reason in ((tmp_path / "missing.pem", "No such file or directory"),
                         (not_pem, "no CA certificate in it")):
        with pytest.raises(configuration.ConfigError, match="ca_file: cannot use %s: %s"
                           % (path, reason)):
            configuration.load({"config_file": str(tmp_path / "none.conf"),
                                "server": "https://127.0.0.1:1", "ca_file": str(path)})
