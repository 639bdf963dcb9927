"""Local stand-ins for a W&B server (tests have no internet): one that answers the viewer query as the URL path
says, and one that accepts connections and never answers."""

from __future__ import annotations

import functools
import http.server
import json
import socket
import threading
from collections.abc import Iterator
from contextlib import contextmanager

FAKE_KEY = "0123456789abcdef0123456789abcdef01234567"  # 40 characters, like a real W&B key


class _Answer(http.server.BaseHTTPRequestHandler):
    """``POST /<answer>/graphql``: ``<answer>`` is an HTTP status; ``200`` finds a user, ``nobody`` finds none."""

    def do_POST(self) -> None:
        self.rfile.read(int(self.headers.get("Content-Length") or 0))
        answer = self.path.strip("/").split("/")[0]
        status = 200 if answer == "nobody" else int(answer)
        viewer = None if answer == "nobody" else {"id": "VXNlcjox"}
        body = json.dumps({"data": {"viewer": viewer}} if status == 200 else {"errors": [{"message": "no"}]}).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args) -> None:
        pass


@functools.cache
def _answering_port() -> int:
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _Answer)
    server.daemon_threads = True
    threading.Thread(target=server.serve_forever, daemon=True).start()
    return server.server_address[1]


def answering_server(answer: int | str = 200) -> str:
    """The base URL (``http://127.0.0.1:PORT/ANSWER``, a free port) of a server answering the viewer query with HTTP
    status ``answer`` (``"nobody"``: 200 without a user). One server per test session, shared."""
    return f"http://127.0.0.1:{_answering_port()}/{answer}"


@contextmanager
def silent_server() -> Iterator[str]:
    """The base URL of a server on a free port that accepts every connection and never answers."""
    listener = socket.create_server(("127.0.0.1", 0))
    held: list[socket.socket] = []
    stop = threading.Event()

    def accept() -> None:
        listener.settimeout(0.2)
        while not stop.is_set():
            try:
                held.append(listener.accept()[0])
            except TimeoutError:
                continue
            except OSError:
                return

    thread = threading.Thread(target=accept, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{listener.getsockname()[1]}"
    finally:
        stop.set()
        thread.join()
        for conn in held:
            conn.close()
        listener.close()
