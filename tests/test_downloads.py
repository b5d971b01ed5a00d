"""downloads.download and read_range against a loopback server that misbehaves on purpose."""

import hashlib

import numpy as np
import pytest

from firstlayer_zoo.downloads import (
    ClientDownloadError,
    DownloadDeadline,
    DownloadError,
    RangeNotSupported,
    RetryPolicy,
    download,
    fetch_bytes,
    read_range,
)
from firstlayer_zoo.limits import LimitExceeded
from firstlayer_zoo.limits import Limits, applied
from loopback import LoopbackServer

# Attempts are counted by their cause (a fault the server was told to make), never by the clock: the read
# timeout is far beyond any wait on a loaded machine, except in the one test of a stalled body, where the
# server holds the body until the test ends and only the client's timeout can end the read.
FAST = RetryPolicy(attempts=3, backoff_s=0.01, max_backoff_s=0.05, read_timeout_s=60)
STALL_TIMEOUT = RetryPolicy(attempts=3, backoff_s=0.01, max_backoff_s=0.05, read_timeout_s=0.5)
DATA = np.random.default_rng(0).integers(0, 256, 300_000, dtype=np.uint8).tobytes()
SHA256 = hashlib.sha256(DATA).hexdigest()


@pytest.fixture
def server():
    with LoopbackServer() as running:
        yield running


def _leftovers(folder):
    return sorted(path.name for path in folder.iterdir())


def test_clean_download_is_verified_and_atomic(server, tmp_path):
    url = server.add("/f.bin", DATA)
    result = download(url, tmp_path / "f.bin", sha256=SHA256, md5=hashlib.md5(DATA).hexdigest(), policy=FAST)
    assert (tmp_path / "f.bin").read_bytes() == DATA
    assert (result.size, result.bytes_fetched, result.attempts, result.resumed) == (len(DATA), len(DATA), 1, False)
    assert _leftovers(tmp_path) == ["f.bin"]


def test_dropped_connection_resumes_with_range(server, tmp_path):
    url = server.add("/f.bin", DATA)
    server.faults["/f.bin"] = ["drop"]
    result = download(url, tmp_path / "f.bin", sha256=SHA256, policy=FAST, log=lambda _: None)
    assert (tmp_path / "f.bin").read_bytes() == DATA
    assert result.resumed and result.attempts == 2
    assert server.requests[1][2] == f"bytes={len(DATA) // 2}-"
    assert result.bytes_fetched == len(DATA)  # nothing fetched twice


def test_dropped_connection_restarts_when_the_server_ignores_range(server, tmp_path):
    url = server.add("/f.bin", DATA)
    server.faults["/f.bin"] = ["drop"]
    server.ignore_range.add("/f.bin")
    result = download(url, tmp_path / "f.bin", sha256=SHA256, policy=FAST, log=lambda _: None)
    assert (tmp_path / "f.bin").read_bytes() == DATA
    assert not result.resumed and result.bytes_fetched == len(DATA) // 2 + len(DATA)


def test_server_error_then_success_is_retried(server, tmp_path):
    url = server.add("/f.bin", DATA)
    server.faults["/f.bin"] = ["500", "503"]
    result = download(url, tmp_path / "f.bin", sha256=SHA256, policy=FAST, log=lambda _: None)
    assert result.attempts == 3 and (tmp_path / "f.bin").read_bytes() == DATA


def test_too_many_requests_is_retried_not_refused(server, tmp_path):
    url = server.add("/f.bin", DATA)
    server.faults["/f.bin"] = ["429"]
    result = download(url, tmp_path / "f.bin", sha256=SHA256, policy=FAST, log=lambda _: None)
    assert result.attempts == 2 and len(server.requests) == 2
    assert (tmp_path / "f.bin").read_bytes() == DATA


def test_not_found_is_not_retried_and_says_what_to_do(server, tmp_path):
    url = server.url + "/missing.bin"
    with pytest.raises(ClientDownloadError, match=r"missing\.bin: HTTP 404.*revision") as caught:
        download(url, tmp_path / "missing.bin", policy=FAST)
    assert caught.value.status == 404
    assert len(server.requests) == 1
    assert _leftovers(tmp_path) == []


@pytest.mark.parametrize("status, advice", [("401", "HF_TOKEN"), ("403", "licence")])
def test_refused_access_names_the_token(server, tmp_path, status, advice):
    url = server.add("/gated.bin", DATA)
    server.faults["/gated.bin"] = [status]
    with pytest.raises(ClientDownloadError, match=advice):
        download(url, tmp_path / "gated.bin", policy=FAST)
    assert len(server.requests) == 1


def test_content_length_longer_than_the_body_is_caught_and_restarted(server, tmp_path):
    url = server.add("/f.bin", DATA)
    server.faults["/f.bin"] = ["long_length"]
    result = download(url, tmp_path / "f.bin", sha256=SHA256, policy=FAST, log=lambda _: None)
    # The short body is kept and resumed; the server answers 416 (nothing left), so the
    # untrustworthy partial file is dropped and the download restarts from zero.
    assert [request[2] for request in server.requests] == [None, f"bytes={len(DATA)}-", None]
    assert result.attempts == 3 and (tmp_path / "f.bin").read_bytes() == DATA


def test_content_length_shorter_than_the_file_fails_the_size_check(server, tmp_path):
    url = server.add("/f.bin", DATA)
    server.faults["/f.bin"] = ["short_length"] * 3
    with pytest.raises(DownloadError, match="expected 300000"):
        download(url, tmp_path / "f.bin", size=len(DATA), policy=FAST, log=lambda _: None)
    assert _leftovers(tmp_path) == [".f.bin.partial"]  # kept for a resume, never under the final name


def test_checksum_mismatch_never_lands_under_the_final_name(server, tmp_path):
    url = server.add("/f.bin", DATA)
    with pytest.raises(DownloadError, match="sha256 of the download is not"):
        download(url, tmp_path / "f.bin", sha256="0" * 64, policy=FAST, log=lambda _: None)
    assert _leftovers(tmp_path) == []


def test_md5_mismatch_is_retried_then_refused_and_never_lands(server, tmp_path):
    url = server.add("/f.bin", DATA)
    with pytest.raises(DownloadError, match="md5 of the download is not"):
        download(url, tmp_path / "f.bin", sha256=SHA256, md5="0" * 32, policy=FAST, log=lambda _: None)
    assert len(server.requests) == FAST.attempts  # each attempt fetched the file afresh
    assert _leftovers(tmp_path) == []


def test_stalled_body_times_out_and_resumes(server, tmp_path):
    url = server.add("/f.bin", DATA)
    server.faults["/f.bin"] = ["stall"]
    result = download(url, tmp_path / "f.bin", sha256=SHA256, policy=STALL_TIMEOUT, log=lambda _: None)
    assert result.resumed and (tmp_path / "f.bin").read_bytes() == DATA
    assert server.requests[1][2] == f"bytes={len(DATA) // 3}-"


def test_a_stall_that_outlasts_every_attempt_names_the_read_timeout(server, tmp_path):
    url = server.add("/f.bin", DATA)
    server.faults["/f.bin"] = ["stall"] * STALL_TIMEOUT.attempts
    with pytest.raises(DownloadError, match=r"last: no data for 0.5 s \(the read timeout\)"):
        download(url, tmp_path / "f.bin", sha256=SHA256, policy=STALL_TIMEOUT, log=lambda _: None)


# A byte every 50 ms never trips the 60 s read timeout: only the overall deadline (here 0.3 s) ends the transfer.
# The server gives up trickling after 20 s, so without a deadline the test fails instead of hanging.
TRICKLE_DEADLINE = Limits(download_minutes=0.005)


@pytest.mark.parametrize("fault", ["trickle", "trickle_headers"])
def test_a_trickling_server_is_cut_at_the_download_deadline_naming_it(tmp_path, fault):
    with LoopbackServer(stall_s=20) as server:
        url = server.add("/f.bin", DATA[:5000])
        server.faults["/f.bin"] = [fault] * FAST.attempts
        with applied(TRICKLE_DEADLINE), pytest.raises(DownloadDeadline) as failed:
            download(url, tmp_path / "f.bin", policy=FAST, log=lambda _: None)
        assert str(failed.value).startswith(f"{url}: not finished within 0.005 min (limits.download_minutes)")
        assert len(server.requests) == 1  # no retry once the deadline has passed
        assert not (tmp_path / "f.bin").exists()
        with applied(TRICKLE_DEADLINE), pytest.raises(DownloadDeadline, match=r"limits\.download_minutes"):
            read_range(url, 0, 4000, policy=FAST)


def test_partial_file_from_a_killed_job_is_resumed(server, tmp_path):
    url = server.add("/f.bin", DATA)
    (tmp_path / ".f.bin.partial").write_bytes(DATA[:1000])
    result = download(url, tmp_path / "f.bin", sha256=SHA256, policy=FAST)
    assert result.resumed and result.bytes_fetched == len(DATA) - 1000


def test_read_range_returns_the_bytes_and_the_total(server):
    url = server.add("/f.bin", DATA)
    server.faults["/f.bin"] = ["500"]
    body, total = read_range(url, 1000, 1100, policy=FAST)
    assert body == DATA[1000:1100] and total == len(DATA)
    assert server.sent["/f.bin"] == 100


def test_read_range_refuses_a_server_without_ranges(server):
    url = server.add("/f.bin", DATA)
    server.ignore_range.add("/f.bin")
    with pytest.raises(RangeNotSupported):
        read_range(url, 0, 10, policy=FAST)


@pytest.mark.parametrize("how", ["download", "read_range", "fetch_bytes"])
def test_a_429_is_retried_after_the_wait_its_retry_after_asks(server, tmp_path, how):
    import time

    url = server.add("/f.bin", DATA)
    server.retry_after = 1
    server.faults["/f.bin"] = ["429"]
    started = time.monotonic()
    if how == "download":
        download(url, tmp_path / "f.bin", sha256=SHA256, policy=FAST, log=lambda _: None)
    elif how == "read_range":
        assert read_range(url, 10, 20, policy=FAST)[0] == DATA[10:20]
    else:
        assert fetch_bytes(url, len(DATA), "download_gb", policy=FAST)[0] == DATA
    assert time.monotonic() - started >= 1.0  # the backoff alone would be 0.01 s
    assert len(server.requests) == 2


def test_the_token_stays_with_its_host_across_a_redirect(server):
    with LoopbackServer() as other:
        target = other.add("/f.bin", DATA)
        seen = []

        def redirect(handler, head):
            seen.append(handler.headers.get("Authorization"))
            handler.send_response(302)
            handler.send_header("Location", target if handler.path == "/away" else server.url + "/f.bin")
            handler.send_header("Content-Length", "0")
            handler.end_headers()
            return True

        server.handle_hook = lambda handler, head: redirect(handler, head) if handler.path in ("/away", "/here") \
            else False
        server.add("/f.bin", DATA)
        headers = {"Authorization": "Bearer hf_secret"}
        assert fetch_bytes(server.url + "/away", len(DATA), "download_gb", headers=headers, policy=FAST)[0] == DATA
        assert read_range(server.url + "/here", 0, 5, headers=headers, policy=FAST)[0] == DATA[:5]
        other_seen = []
        other.handle_hook = lambda handler, head: other_seen.append(handler.headers.get("Authorization")) or False
        fetch_bytes(server.url + "/away", len(DATA), "download_gb", headers=headers, policy=FAST)
    assert seen == ["Bearer hf_secret"] * 3 and other_seen == [None]


def test_fetch_bytes_refuses_an_answer_past_its_limit_naming_the_key(server):
    url = server.add("/big.json", b"x" * 5000)
    with pytest.raises(LimitExceeded, match=r"announces 5,000 bytes, over the limit of 4,096 "
                                            r"\(limits.safetensors_header_mb\)"):
        fetch_bytes(url, 4096, "safetensors_header_mb", policy=FAST)
