"""A threaded HTTP server on 127.0.0.1 that the tests start: files from memory, Range support, faults on demand.

Each path can be given a queue of faults consumed one per request, to imitate
the failures a download meets: a connection dropped mid-body, a 5xx answer, a
stall, a trickle (a byte every `trickle_s`, of the body or of the headers, which
no read timeout catches), a Content-Length that lies, a server that ignores
Range. Bytes sent are counted per path, so tests can show how much a reader
fetched.
"""

from __future__ import annotations

import hashlib
import re
import threading
import time
from collections import defaultdict
from typing import Callable
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

RANGE = re.compile(r"bytes=(\d+)-(\d*)")


class LoopbackServer:
    def __init__(self, stall_s: float = 60.0):
        self.files: dict[str, bytes] = {}
        self.headers: dict[str, dict[str, str]] = {}
        self.faults: dict[str, list[str]] = defaultdict(list)
        self.sent: dict[str, int] = defaultdict(int)
        self.requests: list[tuple[str, str, str | None]] = []
        self.ignore_range: set[str] = set()
        # A stalled body is held until the server stops (or at most stall_s): the client's read timeout,
        # not a race between two clocks, is what ends it.
        self.stall_s = stall_s
        self.trickle_s = 0.05  # between the bytes of a trickle, which also ends at stall_s
        self.released = threading.Event()
        self.handle_hook = None  # optional callable(handler) -> bool (True when it answered)
        server = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *args):
                pass

            def do_HEAD(self):
                server._answer(self, head=True)

            def do_GET(self):
                server._answer(self, head=False)

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.httpd.daemon_threads = True
        self.thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.httpd.server_address[1]}"

    def add(self, path: str, data: bytes, headers: dict[str, str] | None = None) -> str:
        self.files[path] = data
        self.headers[path] = headers or {}
        return self.url + path

    def __enter__(self) -> "LoopbackServer":
        self.thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self.released.set()
        self.httpd.shutdown()
        self.httpd.server_close()

    def _answer(self, handler: BaseHTTPRequestHandler, head: bool) -> None:
        path = handler.path.split("?")[0]
        self.requests.append((handler.command, path, handler.headers.get("Range")))
        if self.handle_hook is not None and self.handle_hook(handler, head):
            return
        fault = self.faults[path].pop(0) if self.faults[path] else None
        if fault in ("500", "503", "429", "404", "403", "401"):
            handler.send_response(int(fault))
            handler.send_header("Content-Length", "0")
            handler.end_headers()
            return
        if path not in self.files:
            handler.send_response(404)
            handler.send_header("Content-Length", "0")
            handler.end_headers()
            return
        self.send_file(handler, path, self.files[path], head, fault, self.headers[path])

    def trickle(self, handler, data: bytes) -> int:
        """Send `data` a byte every trickle_s, until it is sent, stall_s has passed or the server stops."""
        ends = time.monotonic() + self.stall_s
        sent = 0
        try:
            for byte in data:
                if self.released.wait(self.trickle_s) or time.monotonic() > ends:
                    break
                handler.wfile.write(bytes([byte]))
                handler.wfile.flush()
                sent += 1
        except OSError:  # the client hung up
            pass
        handler.close_connection = True
        return sent

    def send_file(self, handler, path: str, data: bytes, head: bool, fault: str | None = None,
                  extra_headers: dict[str, str] | None = None) -> None:
        if fault == "trickle_headers":
            handler.wfile.write(b"HTTP/1.1 200 OK\r\n")
            self.trickle(handler, b"X-Slow: " + b"a" * 10_000 + b"\r\n")
            return
        start, end = 0, len(data)
        match = RANGE.match(handler.headers.get("Range") or "")
        partial = bool(match) and path not in self.ignore_range
        if partial:
            start = int(match.group(1))
            end = min(len(data), int(match.group(2)) + 1) if match.group(2) else len(data)
            if start >= len(data):
                handler.send_response(416)
                handler.send_header("Content-Range", f"bytes */{len(data)}")
                handler.send_header("Content-Length", "0")
                handler.end_headers()
                return
        body = data[start:end]
        handler.send_response(206 if partial else 200)
        for key, value in (extra_headers or {}).items():
            handler.send_header(key, value)
        handler.send_header("Accept-Ranges", "bytes")
        if partial:
            handler.send_header("Content-Range", f"bytes {start}-{end - 1}/{len(data)}")
        declared = len(body) + {"long_length": 1000, "short_length": -10}.get(fault, 0)
        handler.send_header("Content-Length", str(declared))
        if fault in ("drop", "long_length", "short_length", "stall", "trickle"):
            handler.send_header("Connection", "close")
        handler.end_headers()
        if head:
            return
        if fault == "drop":
            body = body[: len(body) // 2]
        elif fault == "trickle":
            self.sent[path] += self.trickle(handler, body)
            return
        elif fault == "stall":
            self.sent[path] += len(body) // 3
            handler.wfile.write(body[: len(body) // 3])
            handler.wfile.flush()
            self.released.wait(self.stall_s)
            handler.close_connection = True
            return
        self.sent[path] += len(body)  # counted before sending: the client may finish before this thread resumes
        handler.wfile.write(body)
        handler.wfile.flush()
        if fault in ("drop", "long_length", "short_length"):
            handler.close_connection = True


HUB_FILE = re.compile(r"^/(?P<repo>[^/]+/[^/]+)/resolve/(?P<revision>[^/]+)/(?P<filename>.+)$")


class HubImitation(LoopbackServer):
    """The part of the Hugging Face Hub that file downloads use: /{repo}/resolve/{revision}/{filename}.

    Answers with the headers huggingface_hub checks (X-Repo-Commit, ETag,
    Content-Length, X-Error-Code on 404s) and honours Range on GET.
    Bytes sent are counted under "{repo}/{filename}". A file given as a
    callable is built by it at each request (a zoo of thousands of repositories
    need not sit in memory; caching is the callable's business).
    """

    def __init__(self, cdn: bool = False):
        super().__init__()
        self.repos: dict[str, dict] = {}
        self.handle_hook = self._hub_answer
        self.cdn = cdn  # answer /resolve/ with a redirect to /cdn/..., as the Hub does for large files
        # The CDN is another origin for the client: the same handlers on a second port of 127.0.0.1
        # (not the name localhost, which may resolve to ::1 only, where nothing listens).
        self.cdn_httpd = ThreadingHTTPServer(("127.0.0.1", 0), self.httpd.RequestHandlerClass)
        self.cdn_httpd.daemon_threads = True
        self.cdn_thread = threading.Thread(target=self.cdn_httpd.serve_forever, daemon=True)
        self.authorization: list[tuple[str, str | None]] = []  # (path, Authorization header) per request

    @property
    def cdn_url(self) -> str:
        return f"http://127.0.0.1:{self.cdn_httpd.server_address[1]}"

    def __enter__(self) -> "HubImitation":
        self.cdn_thread.start()
        return super().__enter__()

    def __exit__(self, *exc) -> None:
        super().__exit__(*exc)
        self.cdn_httpd.shutdown()
        self.cdn_httpd.server_close()

    def add_file(self, repo_id: str, filename: str, data: bytes | Callable[[], bytes]) -> None:
        repo = self.repos.setdefault(repo_id, {"commit": hashlib.sha1(repo_id.encode()).hexdigest(), "files": {}})
        repo["files"][filename] = data

    def file_data(self, repo_id: str, filename: str) -> bytes | None:
        data = self.repos[repo_id]["files"].get(filename)
        return data() if callable(data) else data

    def _hub_answer(self, handler, head: bool) -> bool:
        path = handler.path.split("?")[0]
        self.authorization.append((path, handler.headers.get("Authorization")))
        if path.startswith("/cdn/"):
            repo_id, _, filename = path.removeprefix("/cdn/").rpartition("/")
            key = f"{repo_id}/{filename}"
            fault = self.faults[key].pop(0) if self.faults[key] else None
            self.send_file(handler, key, self.file_data(repo_id, filename), head, fault)
            return True
        match = HUB_FILE.match(path)
        if not match:
            return False
        repo = self.repos.get(match["repo"])
        if repo is None:
            return self._error(handler, 404, "RepoNotFound", None)
        if match["revision"] not in ("main", repo["commit"]):
            return self._error(handler, 404, "RevisionNotFound", None)
        data = self.file_data(match["repo"], match["filename"])
        if data is None:
            return self._error(handler, 404, "EntryNotFound", repo["commit"])
        key = f"{match['repo']}/{match['filename']}"
        if self.cdn:
            handler.send_response(302)
            handler.send_header("Location", f"{self.cdn_url}/cdn/{key}")
            handler.send_header("X-Repo-Commit", repo["commit"])
            handler.send_header("X-Linked-Etag", f'"{hashlib.sha256(data).hexdigest()}"')
            handler.send_header("X-Linked-Size", str(len(data)))
            handler.send_header("Content-Length", "0")
            handler.end_headers()
            return True
        fault = self.faults[key].pop(0) if self.faults[key] else None
        self.send_file(handler, key, data, head, fault, {
            "X-Repo-Commit": repo["commit"],
            "ETag": f'"{hashlib.sha256(data).hexdigest()}"',
        })
        return True

    @staticmethod
    def _error(handler, status: int, code: str, commit: str | None) -> bool:
        handler.send_response(status)
        handler.send_header("X-Error-Code", code)
        if commit:
            handler.send_header("X-Repo-Commit", commit)
        handler.send_header("Content-Length", "0")
        handler.end_headers()
        return True
