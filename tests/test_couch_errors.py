"""What a failed request is called in the log: words, never a Python repr.

A small HTTP server on 127.0.0.1 plays what a proxy in front of a CouchDB
cluster does: a 503 page when no node is up, a chunked answer cut in the middle.
"""
import http.server
import socketserver
import threading

import pytest

from himbeerecouch import couch

PAGE_503 = (b"<html><body><h1>503 Service Unavailable</h1>\n"
            b"No server is available to handle this request.\n</body></html>\n")


class Misbehaving(http.server.BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def do_GET(self):
        if self.path.startswith("/down"):
            self.send_response(503)
            self.send_header("Content-Type", "text/html")
            self.send_header("Content-Length", str(len(PAGE_503)))
            self.end_headers()
            self.wfile.write(PAGE_503)
        elif self.path.startswith("/empty"):
            self.send_response(502)
            self.send_header("Content-Length", "0")
            self.end_headers()
        else:   # a chunked JSON answer cut after its first chunk
            self.send_response(200)
            self.send_header("Content-Type", "application/json")
            self.send_header("Transfer-Encoding", "chunked")
            self.end_headers()
            self.wfile.write(b"5\r\n{\"a\":\r\n")
            self.wfile.flush()
            self.close_connection = True

    def log_message(self, *args):
        pass


@pytest.fixture
def server():
    srv = socketserver.ThreadingTCPServer(("127.0.0.1", 0), Misbehaving)
    srv.daemon_threads = True
    thread = threading.Thread(target=srv.serve_forever, daemon=True)
    thread.start()
    try:
        yield "http://127.0.0.1:%d" % srv.server_address[1]
    finally:
        srv.shutdown()
        srv.server_close()


def failure(url, name):
    with pytest.raises(couch.TRANSPORT_ERRORS) as caught:
        couch.open_database(url, name, timeout=10).info()
    return couch.describe(caught.value)


def test_a_proxys_503_page_is_quoted_by_its_first_line(server):
    assert failure(server, "down") == \
        'server answered 503 "<html><body><h1>503 Service Unavailable</h1>"'
    assert failure(server, "empty") == "server answered 502 with an empty body"


def test_an_answer_cut_mid_chunk_is_a_dropped_connection(server):
    said = failure(server, "cut")
    assert said.startswith("connection dropped"), said
    assert "invalid literal" not in said and "b''" not in said


def test_a_server_that_is_not_there_is_refused():
    with socketserver.TCPServer(("127.0.0.1", 0), Misbehaving) as srv:
        port = srv.server_address[1]
    assert failure("http://127.0.0.1:%d" % port, "x") == "connection refused"
    assert couch.server_answers("http://127.0.0.1:%d" % port, timeout=2) is False
