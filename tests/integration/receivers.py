"""A callback receiver for the tests: a real HTTP server on a loopback port."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any


@dataclass
class Receiver:
    """A real HTTP server on a loopback port that answers callbacks with the given statuses in turn; a "hang"
    holds the request until the test releases it."""

    answers: list[int | str] = field(default_factory=lambda: [200])
    requests: list[tuple[dict[str, str], bytes]] = field(default_factory=list)
    in_flight: int = 0
    lock: threading.Lock = field(default_factory=threading.Lock)
    released: threading.Event = field(default_factory=threading.Event)

    def handle(self, handler: BaseHTTPRequestHandler) -> None:
        body = handler.rfile.read(int(handler.headers["Content-Length"]))
        with self.lock:
            self.requests.append(({k.lower(): v for k, v in handler.headers.items()}, body))
            answer = self.answers[min(len(self.requests), len(self.answers)) - 1]
            self.in_flight += 1
        try:
            if answer == "hang":
                self.released.wait()
                answer = 200
            handler.send_response(int(answer))
            handler.send_header("Content-Length", "2")
            handler.end_headers()
            handler.wfile.write(b"ok")
        except OSError:  # the client gave up on us
            pass
        finally:
            with self.lock:
                self.in_flight -= 1


@contextmanager
def receiving() -> Iterator[tuple[Receiver, str]]:
    """A `Receiver` listening on a free loopback port, and the URL to call it back at."""
    state = Receiver()

    class Handler(BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            state.handle(self)

        def log_message(self, *args: Any) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield state, f"http://127.0.0.1:{server.server_address[1]}/hook"
    finally:
        state.released.set()
        server.shutdown()
        server.server_close()
