"""Robust HTTP(S) transfers: whole files (the archive source's) and ranged reads (remote_tensors.py).

It also names the network failures of every remote source (DownloadError,
unreachable_as): sources that download through torch.hub or torchvision
raise them too, with the way to fetch first.

Transient failures (connection drops, 5xx and 429 answers, stalls caught by a
read timeout, a body shorter than announced) are retried with exponential
backoff, resuming with an HTTP Range request where the server honours it and
restarting where it does not. Client errors (4xx) are not retried: the error
names the URL and what to do. The file appears under its final name only
once its size and checksum are verified. No download grows past
`limits.download_gb`, whether or not the server announces its size, and none
lasts past `limits.download_minutes`, retries included: a server that sends a
byte now and then never trips the read timeout, so a watchdog cuts the
connection at the deadline whatever it is waiting for (the answer's headers
or its body).
"""

from __future__ import annotations

import contextlib
import errno
import hashlib
import http.client
import os
import re
import socket
import threading
import time
import urllib.error
import urllib.parse
import urllib.request
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Iterator

from .limits import LimitExceeded, current as current_limits
from .rule_io import ClearError

CHUNK = 1 << 16
CONTENT_RANGE = re.compile(r"bytes (\d+)-(\d+)/(\d+|\*)")
TRANSIENT_ERRORS = (ConnectionError, TimeoutError, socket.timeout, http.client.HTTPException, urllib.error.URLError)


# How to get a study's remote inputs where the network is not reachable: fetch them where it is.
FETCH_FIRST = ("or fetch the study's remote inputs on a machine with network (e.g. a login node, in the same "
               "folder, with the same --configfile): `snakemake --cores 4 fetch_remote`, then rerun here")


class DownloadError(ClearError):
    """A download that failed for good; the message names the URL and what to do."""


class NetworkError(DownloadError):
    """No connection to the endpoint at all (no route, no name, refused): waiting longer rarely helps."""

    def __init__(self, endpoint: str, reason: str, ways_out: str = f"check the network, {FETCH_FIRST}"):
        self.endpoint, self.reason = endpoint, reason
        super().__init__(f"network: cannot connect to {endpoint} ({reason}); {ways_out}")


def endpoint_of(url: str) -> str:
    """scheme://host[:port] of a URL: what a firewall or a mirror setting is about."""
    parts = urllib.parse.urlsplit(url)
    return f"{parts.scheme}://{parts.netloc}"


def connection_failure(error: BaseException) -> str | None:
    """The reason, when `error` means no connection could be made at all (as opposed to one that broke)."""
    reason = getattr(error, "reason", error) if isinstance(error, urllib.error.URLError) else error
    if isinstance(reason, (socket.gaierror, ConnectionRefusedError)):
        return f"{type(reason).__name__}: {reason}"
    if isinstance(reason, OSError) and reason.errno in (errno.ENETUNREACH, errno.EHOSTUNREACH):
        return f"{type(reason).__name__}: {reason}"
    return None


@contextlib.contextmanager
def unreachable_as(endpoint: str, ways_out: str) -> Iterator[None]:
    """Inside the block, a urllib error that means no connection at all becomes a NetworkError saying `ways_out`."""
    try:
        yield
    except urllib.error.URLError as error:
        unreachable = connection_failure(error)
        if unreachable is None:
            raise
        raise NetworkError(endpoint, unreachable, ways_out) from None


class ClientDownloadError(DownloadError):
    """The server refused the request (4xx): retrying cannot help."""

    def __init__(self, url: str, status: int, reason: str):
        self.status = status
        advice = {
            401: "the server wants credentials: set HF_TOKEN (or log in with `hf auth login`) for Hub files",
            403: "access is denied: accept the model's licence on its page, or set HF_TOKEN to a token that may read it",
            404: "no such file: check the name, the repository and the pinned revision in the config",
            416: "the server refused the byte range: the file is smaller than expected",
        }.get(status, "check the URL and the config entry that produced it")
        super().__init__(f"{url}: HTTP {status} {reason}; {advice}")


class DownloadTooLarge(DownloadError):
    """A download past limits.download_gb."""

    def __init__(self, url: str, limit: int, announced: int | None):
        what = f"announces {announced:,} bytes" if announced is not None else "streamed on without a size"
        super().__init__(f"{url}: the download {what}, over the limit of {limit:,} bytes (limits.download_gb); "
                         "raise limits.download_gb in the config if you trust the source")


class RangeNotSupported(DownloadError):
    """The server answered a Range request with the whole file."""


class DownloadDeadline(DownloadError):
    """A transfer still unfinished at limits.download_minutes (a server that trickles, or one far too slow)."""

    def __init__(self, url: str, minutes: float, received: int):
        super().__init__(f"{url}: not finished within {minutes:g} min (limits.download_minutes), {received:,} bytes "
                         "received; the server is too slow or sends a trickle: use another mirror, or raise "
                         "limits.download_minutes if it is slow but sound (a rerun resumes the partial download)")


@dataclass(frozen=True)
class RetryPolicy:
    attempts: int = 6
    connect_attempts: int = 3  # when no connection can be made at all
    backoff_s: float = 1.0
    max_backoff_s: float = 60.0
    connect_timeout_s: float = 20.0
    read_timeout_s: float = 60.0

    def delay(self, attempt: int) -> float:
        return min(self.max_backoff_s, self.backoff_s * 2**attempt)

    def wait(self, attempt: int) -> None:
        time.sleep(self.delay(attempt))

    def timed_out(self) -> str:
        """What a read timeout means, said in the error that gives up after one."""
        return f"no data for {self.read_timeout_s:g} s (the read timeout)"


@dataclass(frozen=True)
class Download:
    path: Path
    size: int
    bytes_fetched: int
    attempts: int
    resumed: bool


class _Transient(Exception):
    """A failure worth another attempt; `retry_after` is the wait the server asked for (429/503 Retry-After)."""

    def __init__(self, reason: str, retry_after: float | None = None):
        super().__init__(reason)
        self.retry_after = retry_after


def retry_after_seconds(headers) -> float | None:
    """The wait a Retry-After header asks for, in seconds (delay-seconds or an HTTP date); None without one."""
    value = (headers.get("Retry-After") or "").strip() if headers is not None else ""
    if not value:
        return None
    if value.isdigit():
        return float(value)
    import email.utils

    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    return max(0.0, when.timestamp() - time.time())


class _Unreachable(_Transient):
    """No connection at all: worth `connect_attempts` attempts, not a full backoff."""


class _Watchdog:
    """Cuts the connections of one transfer at its deadline, whatever they wait for (TLS, headers, body).

    A read timeout bounds each wait for bytes; a server that sends one now and
    then resets it for ever. The watchdog's timer shuts the socket down, which
    wakes the blocked read; the transfer then sees `expired` and says which
    limit ended it.
    """

    def __init__(self, minutes: float):
        self.minutes = minutes
        self.end = time.monotonic() + minutes * 60
        self.expired = False
        self._lock = threading.Lock()
        self._sockets: list[Callable[[], socket.socket | None]] = []
        self._timer = threading.Timer(minutes * 60, self._expire)
        self._timer.daemon = True

    def __enter__(self) -> "_Watchdog":
        self._timer.start()
        return self

    def __exit__(self, *exc) -> None:
        self._timer.cancel()

    def left(self) -> float:
        return self.end - time.monotonic()

    def watch(self, sock: Callable[[], socket.socket | None]) -> None:
        """Cut the socket `sock()` returns at the deadline (now, if it has passed)."""
        with self._lock:
            self._sockets.append(sock)
            if self.expired:
                self._cut(sock())

    def _expire(self) -> None:
        with self._lock:
            self.expired = True
            for sock in self._sockets:
                self._cut(sock())

    @staticmethod
    def _cut(sock: socket.socket | None) -> None:
        if sock is not None:
            with contextlib.suppress(OSError):
                # The plain socket's shutdown, also under TLS: it wakes a read blocked in another thread.
                socket.socket.shutdown(sock, socket.SHUT_RDWR)

    def opener(self) -> urllib.request.OpenerDirector:
        """urllib's opener, whose HTTP and HTTPS connections (redirects included) this watchdog watches."""
        watchdog = self

        def watched(connection_class):
            class Watched(connection_class):
                def connect(self):
                    watchdog.watch(lambda: self.sock)  # the plain socket while TLS shakes hands
                    super().connect()
                    sock = self.sock  # urllib drops the connection's reference once the headers are read
                    watchdog.watch(lambda: sock)
            return Watched

        class HTTPHandler(urllib.request.HTTPHandler):
            def do_open(self, http_class, request, **kwargs):
                return super().do_open(watched(http_class), request, **kwargs)

        class HTTPSHandler(urllib.request.HTTPSHandler):
            def do_open(self, http_class, request, **kwargs):
                return super().do_open(watched(http_class), request, **kwargs)

        return urllib.request.build_opener(HTTPHandler, HTTPSHandler, TokenKeepingRedirects)


class TokenKeepingRedirects(urllib.request.HTTPRedirectHandler):
    """urllib's redirects, except that credentials stay with the host they were meant for.

    urllib copies every header onto the redirected request; the Hub sends large files to a CDN on another host,
    whose signed URL must not receive the token (huggingface_hub strips it too).
    """

    def redirect_request(self, req, fp, code, msg, headers, newurl):
        new = super().redirect_request(req, fp, code, msg, headers, newurl)
        if new is not None and urllib.parse.urlsplit(newurl).netloc != urllib.parse.urlsplit(req.full_url).netloc:
            for name in list(new.headers):
                if name.lower() == "authorization":
                    del new.headers[name]
        return new


def _open(url: str, headers: dict[str, str], policy: RetryPolicy, watchdog: _Watchdog):
    request = urllib.request.Request(url, headers={"Accept-Encoding": "identity", **headers})
    try:
        return watchdog.opener().open(request, timeout=policy.read_timeout_s)
    except urllib.error.HTTPError as error:
        if error.code == 429 or error.code >= 500:
            raise _Transient(f"HTTP {error.code} {error.reason}", retry_after_seconds(error.headers)) from error
        raise ClientDownloadError(url, error.code, error.reason) from None
    except TRANSIENT_ERRORS as error:
        unreachable = connection_failure(error)
        if unreachable:
            raise _Unreachable(unreachable) from error
        raise _Transient(_reason(error, policy)) from error


def _reason(error: BaseException, policy: RetryPolicy) -> str:
    """A transient failure in words; a read timeout says which limit it was."""
    cause = getattr(error, "reason", error) if isinstance(error, urllib.error.URLError) else error
    if isinstance(cause, TimeoutError):
        return policy.timed_out()
    return f"{type(error).__name__}: {error}"


def _announced_total(response, offset: int) -> int | None:
    """The whole file's size as the response states it (Content-Range, else offset + Content-Length)."""
    match = CONTENT_RANGE.match(response.headers.get("Content-Range", ""))
    if match and match.group(3) != "*":
        return int(match.group(3))
    length = response.headers.get("Content-Length")
    return offset + int(length) if length is not None else None


def file_digest(path: Path, algorithm: str) -> str:
    digest = hashlib.new(algorithm)
    with open(path, "rb") as handle:
        while block := handle.read(CHUNK):
            digest.update(block)
    return digest.hexdigest()


def download(url: str, dest: str | Path, *, sha256: str | None = None, md5: str | None = None,
             size: int | None = None, headers: dict[str, str] | None = None,
             policy: RetryPolicy = RetryPolicy(), log=print) -> Download:
    """Fetch `url` to `dest`, verified; a partial file lives beside it as `.<name>.partial` meanwhile.

    The partial file survives a killed job, so the next attempt (or the next
    run) resumes it where the server allows ranges.
    """
    dest = Path(dest)
    dest.parent.mkdir(parents=True, exist_ok=True)
    partial = dest.parent / f".{dest.name}.partial"
    limits = current_limits()
    with _Watchdog(limits.download_minutes) as watchdog:
        return _download(url, dest, partial, sha256, md5, size, dict(headers or {}), policy, log, watchdog,
                         limits.download_bytes)


def _download(url: str, dest: Path, partial: Path, sha256: str | None, md5: str | None, size: int | None,
              headers: dict[str, str], policy: RetryPolicy, log, watchdog: _Watchdog, limit: int) -> Download:
    fetched, resumed, last_error = 0, False, None
    for attempt in range(policy.attempts):
        if attempt:
            log(f"{url}: attempt {attempt + 1}/{policy.attempts} after {last_error}")
            _wait_within(watchdog, policy, attempt - 1, url, fetched, last_error)
        offset = partial.stat().st_size if partial.exists() else 0
        if size is not None and offset > size:
            partial.unlink()
            offset = 0
        request_headers = {**headers, **({"Range": f"bytes={offset}-"} if offset else {})}
        try:
            response = _open(url, request_headers, policy, watchdog)
        except _Unreachable as error:
            _give_up_if_unreachable(url, error, attempt, policy)
            last_error = error
            continue
        except _Transient as error:
            _check_deadline(watchdog, url, fetched)
            last_error = error
            continue
        except ClientDownloadError as error:
            if error.status == 416 and offset:
                partial.unlink()  # the partial file is as long as (or longer than) the file: start afresh
                last_error = error
                continue
            raise
        with response:
            _check_deadline(watchdog, url, fetched)  # headers cut short by the watchdog still parse as an answer
            if offset and response.status == 206:
                resumed = True
                mode = "ab"
            else:
                offset, mode = 0, "wb"  # the server sent the whole file: restart
            total = _announced_total(response, offset)
            if total is not None and total > limit:
                partial.unlink(missing_ok=True)
                raise DownloadTooLarge(url, limit, announced=total)
            try:
                with open(partial, mode) as handle:
                    written = offset
                    while block := response.read1(CHUNK):
                        written += len(block)
                        if written > limit:
                            handle.close()
                            partial.unlink()
                            raise DownloadTooLarge(url, limit, announced=None)
                        handle.write(block)
                        fetched += len(block)
            except TRANSIENT_ERRORS as error:
                _check_deadline(watchdog, url, fetched)
                last_error = _Transient(_reason(error, policy))
                continue
        # A body cut short by the watchdog ends like a complete one when the server announced no size.
        _check_deadline(watchdog, url, fetched)
        have = partial.stat().st_size
        expected = size if size is not None else total
        if expected is not None and have != expected:
            last_error = _Transient(f"got {have} bytes, expected {expected}")
            if have > expected:
                partial.unlink()
            continue
        for algorithm, wanted in (("sha256", sha256), ("md5", md5)):
            if wanted and file_digest(partial, algorithm) != wanted.lower():
                partial.unlink()
                last_error = _Transient(f"{algorithm} of the download is not {wanted}")
                break
        else:
            os.replace(partial, dest)
            return Download(dest, have, fetched, attempt + 1, resumed)
    raise DownloadError(
        f"{url}: gave up after {policy.attempts} attempts (last: {last_error}); "
        "check the network or the server, then rerun: a partial download is resumed"
    )


def _check_deadline(watchdog: _Watchdog, url: str, received: int) -> None:
    if watchdog.expired:
        raise DownloadDeadline(url, watchdog.minutes, received)


def _wait_within(watchdog: _Watchdog, policy: RetryPolicy, attempt: int, url: str, received: int,
                 last_error: object = None) -> None:
    """Back off before another attempt (as long as a 429's Retry-After asks, if longer), unless the wait itself
    would pass the deadline."""
    asked = getattr(last_error, "retry_after", None)
    delay = max(policy.delay(attempt), asked or 0.0)
    if watchdog.left() <= delay:
        raise DownloadDeadline(url, watchdog.minutes, received)
    if asked is not None and asked > policy.delay(attempt):
        time.sleep(asked)
    else:
        policy.wait(attempt)
    _check_deadline(watchdog, url, received)


def read_range(url: str, start: int, end: int, *, headers: dict[str, str] | None = None,
               policy: RetryPolicy = RetryPolicy()) -> tuple[bytes, int | None]:
    """Bytes [start, end) of a remote file and the file's total size; retried like `download`.

    Raises RangeNotSupported when the server ignores the Range header, so the
    caller can fall back to a full download instead of reading the whole file here.
    """
    if end <= start:
        return b"", None
    with _Watchdog(current_limits().download_minutes) as watchdog:
        return _read_range(url, start, end, {**(headers or {}), "Range": f"bytes={start}-{end - 1}"}, policy,
                           watchdog)


def _read_range(url: str, start: int, end: int, request_headers: dict[str, str], policy: RetryPolicy,
                watchdog: _Watchdog) -> tuple[bytes, int | None]:
    last_error = None
    for attempt in range(policy.attempts):
        if attempt:
            _wait_within(watchdog, policy, attempt - 1, url, 0, last_error)
        try:
            response = _open(url, request_headers, policy, watchdog)
        except _Unreachable as error:
            _give_up_if_unreachable(url, error, attempt, policy)
            last_error = error
            continue
        except _Transient as error:
            _check_deadline(watchdog, url, 0)
            last_error = error
            continue
        with response:
            _check_deadline(watchdog, url, 0)  # headers cut short by the watchdog still parse as an answer
            if response.status != 206:
                raise RangeNotSupported(f"{url}: the server ignored a Range request (HTTP {response.status})")
            match = CONTENT_RANGE.match(response.headers.get("Content-Range", ""))
            total = int(match.group(3)) if match and match.group(3) != "*" else None
            try:
                body = response.read()
            except TRANSIENT_ERRORS as error:
                _check_deadline(watchdog, url, 0)
                last_error = _reason(error, policy)
                continue
        _check_deadline(watchdog, url, len(body))
        wanted = (min(end, total) if total is not None else end) - start
        if len(body) == wanted:
            return body, total
        last_error = f"got {len(body)} bytes of {end - start}"
    raise DownloadError(f"{url}: bytes {start}-{end - 1} failed after {policy.attempts} attempts (last: {last_error})")


def fetch_bytes(url: str, limit: int, limit_key: str, *, headers: dict[str, str] | None = None,
                policy: RetryPolicy = RetryPolicy()):
    """The whole body of a small resource (a JSON answer or file) and the answer's headers; retried like `download`.

    A body past `limit` bytes, announced or streamed, is refused naming `limits.<limit_key>`; 4xx answers raise
    ClientDownloadError (the caller knows whether a 404 means "absent").
    """
    with _Watchdog(current_limits().download_minutes) as watchdog:
        last_error = None
        for attempt in range(policy.attempts):
            if attempt:
                _wait_within(watchdog, policy, attempt - 1, url, 0, last_error)
            try:
                response = _open(url, dict(headers or {}), policy, watchdog)
            except _Unreachable as error:
                _give_up_if_unreachable(url, error, attempt, policy)
                last_error = error
                continue
            except _Transient as error:
                _check_deadline(watchdog, url, 0)
                last_error = error
                continue
            with response:
                _check_deadline(watchdog, url, 0)
                announced = response.headers.get("Content-Length")
                if announced is not None and announced.isdigit() and int(announced) > limit:
                    raise LimitExceeded(f"{url}: the answer announces {int(announced):,} bytes, over the limit of "
                                        f"{limit:,} (limits.{limit_key}); raise limits.{limit_key} in the config if "
                                        "you trust the server")
                try:
                    body = response.read(limit + 1)
                except TRANSIENT_ERRORS as error:
                    _check_deadline(watchdog, url, 0)
                    last_error = _Transient(_reason(error, policy))
                    continue
                answer_headers = response.headers
            _check_deadline(watchdog, url, len(body))
            if len(body) > limit:
                raise LimitExceeded(f"{url}: the answer runs past the limit of {limit:,} bytes (limits.{limit_key}); "
                                    f"raise limits.{limit_key} in the config if you trust the server")
            if announced is not None and announced.isdigit() and len(body) != int(announced):
                last_error = _Transient(f"got {len(body)} bytes, expected {announced}")
                continue
            return body, answer_headers
    raise DownloadError(f"{url}: gave up after {policy.attempts} attempts (last: {last_error}); check the network "
                        "or the server, then rerun")


def _give_up_if_unreachable(url: str, error: _Unreachable, attempt: int, policy: RetryPolicy) -> None:
    if attempt + 1 >= min(policy.connect_attempts, policy.attempts):
        raise NetworkError(endpoint_of(url), str(error)) from None
