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
import json
import re
import threading
import time
import urllib.parse
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
        self.retry_after: int | None = None  # seconds, sent with the faults "429" and "503" when set
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
            if self.retry_after is not None and fault in ("503", "429"):
                handler.send_header("Retry-After", str(self.retry_after))
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
        if fault in ("500", "503", "429"):
            handler.send_response(int(fault))
            if self.retry_after is not None:
                handler.send_header("Retry-After", str(self.retry_after))
            handler.send_header("Content-Length", "0")
            handler.end_headers()
            return
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
HUB_INFO = re.compile(r"^/api/models/(?P<repo>[^/]+/[^/]+?)(?:/revision/(?P<revision>[^/]+))?$")
# The sort keys of /api/models, by the repository field each sorts on (always descending, as the Hub does).
HUB_SORT = {"downloads": "downloads", "likes": "likes", "lastModified": "lastModified", "createdAt": "createdAt",
            "trendingScore": "downloads"}


def etag_of(data) -> str:
    """A file's ETag: its SHA-256, or for a virtual file (not held as bytes) that of its header and size."""
    if isinstance(data, (bytes, bytearray)):
        return hashlib.sha256(data).hexdigest()
    return hashlib.sha256(data[0:4096] + str(len(data)).encode()).hexdigest()


def _built(data):
    """A file's bytes: as given, or built by the callable given."""
    return data() if callable(data) else data


class HubImitation(LoopbackServer):
    """The parts of the Hugging Face Hub this workflow uses, on 127.0.0.1.

    - files: /{repo}/resolve/{revision}/{filename}, with the headers huggingface_hub checks (X-Repo-Commit,
      ETag, Content-Length, X-Error-Code on errors), Range on GET, optionally a redirect to a "CDN" on a second
      port (`cdn=True`), 401/403 for gated repositories without an accepted token;
    - model info: /api/models/{repo}[/revision/{revision}] (sha, siblings, cardData, gated, tags, ...);
    - the listing: /api/models?author=&filter=&pipeline_tag=&search=&sort=&limit=&expand=, paginated `page_size`
      at a time through a Link header with rel="next", as the Hub's cursor pages are.

    A repository keeps every commit it was given (`add_repo` twice makes a new one; the old stays readable by
    its sha). Files may be bytes or any object that slices like bytes and has a len() (a large virtual file).
    A file given as a callable is built by it at each request (a zoo of thousands of repositories need not
    sit in memory; caching is the callable's business).
    Bytes sent are counted under "{repo}/{filename}"; `api_requests` lists the API paths asked.
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
        self.page_size = 100  # the listing's page; the Hub's default is larger, tests make it small
        self.accepted_tokens: set[str] = set()  # tokens whose owner accepted every gated repository's terms
        self.api_requests: list[str] = []
        self.retry_after = 1  # seconds, in a 429 or 503 answer (faults "429", "503")

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
        repo = self.repos.get(repo_id)
        if repo is None:
            commit = hashlib.sha1(repo_id.encode()).hexdigest()
            repo = self.repos[repo_id] = {"commit": commit, "files": {}, "commits": {}, "info": {}}
            repo["commits"][commit] = repo["files"]
        repo["files"][filename] = data

    def add_repo(self, repo_id: str, files: dict, *, card_data: dict | None = None, pipeline_tag: str | None = None,
                 library: str | None = None, tags: tuple[str, ...] = (), downloads: int = 0, likes: int = 0,
                 gated: bool | str = False, created: str = "2024-01-01T00:00:00.000Z") -> str:
        """A repository (or a new commit of one, its files replacing the old) and its model info; returns the sha."""
        repo = self.repos.get(repo_id)
        commits = repo["commits"] if repo else {}
        commit = hashlib.sha1(f"{repo_id}:{len(commits)}".encode()).hexdigest()
        commits[commit] = dict(files)
        author = repo_id.split("/")[0]
        # The Hub tags a repository whose card declares a base model base_model:<id> and
        # base_model:<relation>:<id> (finetune where the card gives no base_model_relation).
        base = (card_data or {}).get("base_model")
        relation = (card_data or {}).get("base_model_relation") or "finetune"
        tags = (*tags, *(tag for one in ([base] if isinstance(base, str) else base or [])
                         for tag in (f"base_model:{one}", f"base_model:{relation}:{one}")))
        self.repos[repo_id] = {"commit": commit, "files": commits[commit], "commits": commits, "info": {
            "_id": hashlib.md5(repo_id.encode()).hexdigest()[:24], "id": repo_id, "modelId": repo_id,
            "author": author, "private": False, "disabled": False, "gated": gated,
            "pipeline_tag": pipeline_tag, "library_name": library,
            "tags": sorted({*tags, *([library] if library else []),
                            *(["safetensors"] if any(f.endswith(".safetensors") for f in files) else [])}),
            "downloads": downloads, "likes": likes, "createdAt": created, "lastModified": created,
            **({"cardData": card_data} if card_data is not None else {}),
        }}
        return commit

    def _hub_answer(self, handler, head: bool) -> bool:
        path = handler.path.split("?")[0]
        self.authorization.append((path, handler.headers.get("Authorization")))
        if path.startswith("/cdn/"):
            repo_id, _, rest = path.removeprefix("/cdn/").partition("@")
            commit, _, filename = rest.partition("/")
            key = f"{repo_id}/{filename}"
            fault = self.faults[key].pop(0) if self.faults[key] else None
            self.send_file(handler, key, _built(self.repos[repo_id]["commits"][commit][filename]), head, fault)
            return True
        if path == "/api/models":
            self.api_requests.append(handler.path)
            return self._listing(handler)
        info = HUB_INFO.match(path)
        if info:
            self.api_requests.append(handler.path)
            return self._model_info(handler, info["repo"], info["revision"])
        match = HUB_FILE.match(path)
        if not match:
            return False
        repo = self.repos.get(match["repo"])
        if repo is None:
            return self._error(handler, 404, "RepoNotFound", None)
        commit = repo["commit"] if match["revision"] == "main" else match["revision"]
        if commit not in repo["commits"]:
            return self._error(handler, 404, "RevisionNotFound", None)
        if repo["info"].get("gated"):
            token = (handler.headers.get("Authorization") or "").removeprefix("Bearer ")
            if not token:
                return self._error(handler, 401, "GatedRepo", commit)
            if token not in self.accepted_tokens:
                return self._error(handler, 403, "GatedRepo", commit)
        data = _built(repo["commits"][commit].get(match["filename"]))
        if data is None:
            return self._error(handler, 404, "EntryNotFound", commit)
        key = f"{match['repo']}/{match['filename']}"
        if self.cdn:
            handler.send_response(302)
            handler.send_header("Location", f"{self.cdn_url}/cdn/{match['repo']}@{commit}/{match['filename']}")
            handler.send_header("X-Repo-Commit", commit)
            handler.send_header("X-Linked-Etag", f'"{etag_of(data)}"')
            handler.send_header("X-Linked-Size", str(len(data)))
            handler.send_header("Content-Length", "0")
            handler.end_headers()
            return True
        fault = self.faults[key].pop(0) if self.faults[key] else None
        self.send_file(handler, key, data, head, fault, {
            "X-Repo-Commit": commit,
            "ETag": f'"{etag_of(data)}"',
        })
        return True

    def _info(self, repo_id: str, commit: str, fields: list[str] | None) -> dict:
        repo = self.repos[repo_id]
        info = {**repo["info"], "sha": commit,
                "siblings": [{"rfilename": name} for name in sorted(repo["commits"][commit])]}
        if fields:
            info = {key: value for key, value in info.items() if key in (*fields, "_id", "id")}
        return info

    def _model_info(self, handler, repo_id: str, revision: str | None) -> bool:
        repo = self.repos.get(repo_id)
        if repo is None or not repo["info"]:
            return self._error(handler, 401, "RepoNotFound", None)  # the Hub says 401 for private and unknown ids
        commit = repo["commit"] if revision in (None, "main") else urllib.parse.unquote(revision)
        if commit not in repo["commits"]:
            return self._error(handler, 404, "RevisionNotFound", None)
        query = urllib.parse.parse_qs(urllib.parse.urlsplit(handler.path).query)
        return self._json(handler, self._info(repo_id, commit, query.get("expand") or query.get("expand[]")))

    def _listing(self, handler) -> bool:
        query = urllib.parse.parse_qs(urllib.parse.urlsplit(handler.path).query)
        one = {key: values[-1] for key, values in query.items()}
        found = [repo for repo in self.repos.values() if repo["info"]]
        if "author" in one:
            found = [repo for repo in found if repo["info"]["author"] == one["author"]]
        for tag in query.get("filter", []):
            found = [repo for repo in found if tag in repo["info"]["tags"] or tag == repo["info"]["library_name"]]
        if "pipeline_tag" in one:
            found = [repo for repo in found if repo["info"]["pipeline_tag"] == one["pipeline_tag"]]
        if "search" in one:
            found = [repo for repo in found if one["search"].lower() in repo["info"]["id"].lower()]
        if "sort" in one:
            field = HUB_SORT[one["sort"]]
            found.sort(key=lambda repo: (repo["info"][field], repo["info"]["id"]), reverse=True)
        else:
            found.sort(key=lambda repo: repo["info"]["id"])
        start = int(one.get("cursor", 0))
        size = min(self.page_size, int(one.get("limit", self.page_size)))
        page = found[start:start + size]
        fields = query.get("expand") or query.get("expand[]")
        body = [self._info(repo["info"]["id"], repo["commit"], fields or ["downloads", "likes", "pipeline_tag",
                                                                           "library_name", "tags", "createdAt"])
                for repo in page]
        links = {}
        if start + size < len(found):
            rest = [(key, value) for key, values in query.items() if key != "cursor" for value in values]
            links["Link"] = f'<{self.url}/api/models?{urllib.parse.urlencode([*rest, ("cursor", start + size)])}>; ' \
                            'rel="next"'
        return self._json(handler, body, links)

    def _json(self, handler, value, headers: dict | None = None) -> bool:
        data = json.dumps(value).encode()
        path = urllib.parse.urlsplit(handler.path).path
        fault = self.faults[path].pop(0) if self.faults[path] else None
        if fault in ("429", "503"):
            handler.send_response(int(fault))
            handler.send_header("Retry-After", str(self.retry_after))
            handler.send_header("Content-Length", "0")
            handler.end_headers()
            return True
        handler.send_response(200)
        handler.send_header("Content-Type", "application/json")
        for key, value in (headers or {}).items():
            handler.send_header(key, value)
        handler.send_header("Content-Length", str(len(data)))
        handler.end_headers()
        if handler.command != "HEAD":
            handler.wfile.write(data)
        self.sent[path] += len(data)
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
