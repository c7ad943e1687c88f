"""The doctor's HTTP port: /metrics (Prometheus) and /diagnosis.md (the latest report), from the
standard library's server in a thread.  `/` lists both."""
from __future__ import annotations

import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Callable

from prometheus_client import CONTENT_TYPE_LATEST, REGISTRY, CollectorRegistry, generate_latest

INDEX = b"stability doctor: /diagnosis.md (the latest diagnosis), /metrics\n"


def serve(addr: str, port: int, report: Callable[[], str],
          registry: CollectorRegistry = REGISTRY) -> ThreadingHTTPServer:
    """Start serving on addr:port in a daemon thread; returns the server (server.server_address
    has the port when 0 was asked for)."""

    class Handler(BaseHTTPRequestHandler):
        def do_GET(self):   # noqa: N802 (the standard library's name)
            path = self.path.split("?", 1)[0]
            if path == "/metrics":
                body, kind = generate_latest(registry), CONTENT_TYPE_LATEST
            elif path in ("/diagnosis.md", "/diagnosis"):
                body, kind = report().encode(), "text/markdown; charset=utf-8"
            elif path == "/":
                body, kind = INDEX, "text/plain; charset=utf-8"
            else:
                self.send_error(404, "not found: try /diagnosis.md or /metrics")
                return
            self.send_response(200)
            self.send_header("Content-Type", kind)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *args):   # a scrape every 5 s: not worth a log line each
            pass

    server = ThreadingHTTPServer((addr, port), Handler)
    server.daemon_threads = True
    threading.Thread(target=server.serve_forever, name="doctor-http", daemon=True).start()
    return server
