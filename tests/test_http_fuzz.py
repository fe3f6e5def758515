"""Fuzz the status page and the metrics endpoint (issue 14, every entry point): raw bytes over a
real TCP socket on 127.0.0.1 → a 2xx/3xx/4xx or a closed connection, never a 5xx, never the
password in a reply, never a hang; a valid authenticated request still works afterwards.

Requests are built from parts that are each right or hostile: the method, the target
(traversal, %-escapes, 64 kB paths), the version, the headers (huge, duplicate, Basic
credentials that are not base64 or not UTF-8, CR/LF and NUL inside), the body (short, long,
chunked, lying Content-Length), and sometimes any bytes at all. One server per test, one
connection per example. Per-example deadline: ``asyncio.wait_for`` on the exchange and a
SIGVTALRM timer on the process's CPU time. ``make faults`` runs FUZZ_EXAMPLES.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import contextlib
import datetime as dt
import os
import re
from collections.abc import Iterator
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from edge.ops.http_site import REJECTED, Site
from edge.ops.metrics import serve_metrics
from edge.ops.status_page import LoginThrottle, serve_status_page
from hil.broker import free_port
from tests.fuzz_watchdog import cpu_deadline, watched_loop

pytestmark = pytest.mark.reliability

# ~180 examples/s (a connection each): 600 keep make test short; make faults sets 100 k
FUZZ_EXAMPLES = int(os.environ.get("FUZZ_EXAMPLES", "600"))
EXAMPLE_DEADLINE_S = 5.0  # an exchange takes ~2 ms; a hang is far beyond
FIRST_BYTE_S = 0.05  # no answer by then: the server waits for the rest of the request
PASSWORD = "cabinet-7f3a9c21d0"
CREDENTIALS = re.compile(rb"(?i)authorization: *basic +([A-Za-z0-9+/=]+)")
STATUS_LINE = re.compile(rb"HTTP/\d\.\d (\d{3}) ")  # aiohttp answers in the asked version

PATHS = ["/", "/api/status", "/api/probe/lamp-3", "/api/probe/ghost", "/metrics", "/healthz",
         "/nope", "*", "http://127.0.0.1/metrics", "//api/status", "/api/probe/",
         "/../../etc/passwd", "/%2e%2e/%2e%2e/etc/passwd", "/api/probe/..%2f..%2fetc%2fpasswd",
         "/api/probe/%00", "/api/probe/%ff%fe", "/%zz", "/%", "/metrics?%", "/?a=1&a=2",
         "/api/status#frag", "/api/probe/lamp-3/..", "\\..\\..\\windows", "/\x00", "/é"]
METHODS = ["GET", "POST", "HEAD", "PUT", "DELETE", "OPTIONS", "PATCH", "TRACE", "CONNECT",
           "get", "PRI", "G\x00T", "GET GET"]
VERSIONS = ["HTTP/1.1", "HTTP/1.0", "HTTP/1.1", "HTTP/2.0", "HTTP/0.9", "HTTP/9.9", "HTTP/1.",
            "http/1.1", "HTTP/1.1 extra", ""]


def _b64(raw: bytes) -> str:
    return base64.b64encode(raw).decode()


GOOD_AUTH = f"Basic {_b64(f'tech:{PASSWORD}'.encode())}".encode()
# strategies are built once: a strategy made inside each draw costs more than the exchange
AUTH_VALUES = st.one_of(
    st.just(GOOD_AUTH),
    st.sampled_from([b"Basic", b"Basic ", b"Basic !!!not-base64", b"Basic ====", b"Bearer abc",
                     b"basic " + _b64(f":{PASSWORD}".encode()).encode(),
                     b"Basic " + _b64(b"\xff\xfe:\xff").encode(),  # not UTF-8
                     b"Basic " + _b64(b"no-colon").encode(),
                     b"Basic " + _b64(f"tech:{PASSWORD}\x00".encode()).encode(),
                     GOOD_AUTH[:-2], GOOD_AUTH + b" junk", b"Basic " + b"A" * 20_000]),
    st.binary(max_size=60).map(lambda raw: b"Basic " + _b64(raw).encode()),
    st.binary(max_size=60).map(lambda raw: b"Basic " + raw),
    st.binary(max_size=60))
HEADER_NAMES = st.sampled_from([
    b"Host", b"Authorization", b"X-Requested-With", b"Content-Length", b"Transfer-Encoding",
    b"Connection", b"Expect", b"Content-Type", b"Cookie", b"Upgrade", b"X-Forwarded-For",
    b"Range", b"Accept-Encoding"]) | st.binary(min_size=1, max_size=20)
HEADER_VALUES = st.sampled_from([
    b"127.0.0.1", b"edge", b"0", b"-1", b"18446744073709551616", b"1e3", b"chunked",
    b"gzip, chunked", b"chunked, chunked", b"close", b"keep-alive", b"Upgrade", b"100-continue",
    b"websocket", b"h2c", b"bytes=0-1,-5", b"", b"\xff\xfe", b"a\x00b", b"a\rb",
    b" folded\r\n x", b"x" * 9000]) | st.binary(max_size=80)
LEGAL_HEADERS = st.lists(st.sampled_from([
    (b"Accept", b"*/*"), (b"Connection", b"keep-alive"), (b"Connection", b"close"),
    (b"Content-Type", b"application/json"), (b"Accept-Encoding", b"gzip"), (b"Cookie", b"a=b"),
    (b"Range", b"bytes=0-1,-5"), (b"Expect", b"100-continue"), (b"Upgrade", b"websocket"),
    (b"X-Forwarded-For", b"10.0.0.1, ::1")]), max_size=3, unique_by=lambda h: h[0])
HOSTILE_HEADERS = st.lists(st.tuples(HEADER_NAMES, HEADER_VALUES), min_size=1, max_size=4)
SPOILED = st.lists(st.sampled_from(["raw", "method", "path", "path", "version", "eol", "header",
                                    "header", "auth", "auth", "length", "chunked",
                                    "duplicates", "big_header", "pipelined"]), max_size=2)
GOOD_METHODS = st.sampled_from([b"GET", b"GET", b"POST", b"HEAD"])
BAD_METHODS = st.sampled_from([m.encode() for m in METHODS]) | st.binary(max_size=12)
GOOD_PATHS = st.sampled_from([p.encode() for p in PATHS[:7]])
BAD_PATHS = st.one_of(
    st.sampled_from([p.encode() for p in PATHS]),
    st.text(max_size=60).map(lambda t: ("/" + t).encode("utf-8", "surrogatepass")),
    st.lists(st.sampled_from(["%", "%2", "%2f", "%2e", "%00", "%ff", "%zz", "..", "/", "a",
                              "%25", "?", "#", ";", "%c0%ae"]), max_size=30)
    .map(lambda parts: ("/" + "".join(parts)).encode()),
    st.integers(1_000, 70_000).map(lambda n: b"/" + b"a" * n),  # huge
    st.binary(max_size=40))
BAD_VERSIONS = st.sampled_from([v.encode() for v in VERSIONS]) | st.binary(max_size=10)
BAD_EOLS = st.sampled_from([b"\n", b"\r", b"\r\r\n"])
BODIES = st.binary(max_size=600)
CHUNKED = st.sampled_from([b"0\r\n\r\n", b"5\r\nhello\r\n0\r\n\r\n", b"zz\r\nxx\r\n",
                           b"ffffffffffffffffff\r\n", b"5;ext=1\r\nhello\r\n"]) | st.binary(max_size=60)
BAD_LENGTHS = st.sampled_from([b"-1", b"1e3", b"18446744073709551616", b"0x10", b"5, 6", b""]) \
    | st.integers(0, 10**7).map(lambda n: str(n).encode())
RAW = st.binary(max_size=3000)
TRAILERS = st.sampled_from([b"", b"GET /metrics HTTP/1.1\r\n\r\n"]) | st.binary(max_size=200)


@st.composite
def _requests(draw: st.DrawFn) -> bytes:
    """One request on the wire: a well-formed one with up to two parts made hostile."""
    spoiled = set(draw(SPOILED))
    if "raw" in spoiled:
        return draw(RAW)
    method = draw(BAD_METHODS if "method" in spoiled else GOOD_METHODS)
    path = draw(BAD_PATHS if "path" in spoiled else GOOD_PATHS)
    version = draw(BAD_VERSIONS) if "version" in spoiled else b"HTTP/1.1"
    eol = draw(BAD_EOLS) if "eol" in spoiled else b"\r\n"
    headers: list[tuple[bytes, bytes]] = [(b"Host", b"127.0.0.1")]
    if "auth" in spoiled:
        headers.append((b"Authorization", draw(AUTH_VALUES)))
    elif draw(st.integers(0, 3)):
        headers.append((b"Authorization", GOOD_AUTH))
    if draw(st.booleans()):
        headers.append((b"X-Requested-With", b"edge"))
    headers += draw(LEGAL_HEADERS)
    if "header" in spoiled:
        headers += draw(HOSTILE_HEADERS)
    if "duplicates" in spoiled:
        headers += [(b"X-Dup", b"v")] * draw(st.integers(100, 400))
    if "big_header" in spoiled:  # over aiohttp's 8190-byte limit, or just under
        headers.append((b"X-Big", b"a" * draw(st.integers(8_000, 100_000))))
    body = draw(BODIES) if method == b"POST" or "length" in spoiled else b""
    if "chunked" in spoiled:
        headers.append((b"Transfer-Encoding", b"chunked"))
        body = draw(CHUNKED)
    if "length" in spoiled:
        headers.append((b"Content-Length", draw(BAD_LENGTHS)))
    elif body:
        headers.append((b"Content-Length", str(len(body)).encode()))
    lines = [method + b" " + path + (b" " + version if version else b"")]
    lines += [name + b": " + value for name, value in headers]
    request = eol.join(lines) + eol + eol + body
    if "pipelined" in spoiled:  # a second request, or garbage, on the same connection
        request += draw(st.just(request) | TRAILERS)
    return request



async def _status() -> dict[str, Any]:
    return {"gateway": "gw-1", "version": "t", "uptime_s": 1.0, "time_quality": "synced",
            "devices": {"lamp-3": {"kind": "streetlight", "state": "online", "polls_ok": 1,
                                   "polls_failed": 0, "values": {"power_w": 98.5,
                                                                 "relay_on": True}}},
            "outbox": {"depth": 0, "dead_letters": 0, "by_prio": {}, "drops": {}},
            "uplink": {"connected": True, "connected_since": 1.0e9}, "active_alarms": []}


async def _probe(name: str) -> dict[str, Any]:
    if name != "lamp-3":
        raise KeyError(name)
    return {"power_w": 98.5}


def _complete(got: bytes, head_only: bool) -> bool:
    """Whether ``got`` holds one whole final response (1xx interim answers skipped)."""
    while True:
        end = got.find(b"\r\n\r\n")
        if end < 0:
            return False
        head, rest = got[:end].lower(), got[end + 4:]
        status = STATUS_LINE.match(got)
        if status is not None and status.group(1).startswith(b"1"):
            got = rest  # 100 Continue: the final answer follows
            continue
        if head_only or (status is not None and status.group(1) in (b"204", b"304")):
            return True
        length = re.search(rb"\r\ncontent-length: *(\d+)", head)
        if length is not None:
            return len(rest) >= int(length.group(1))
        if b"\r\ntransfer-encoding: chunked" in head:
            return rest.endswith(b"0\r\n\r\n")
        return False  # delimited by the close


async def _exchange(port: int, raw: bytes) -> bytes:
    """Send ``raw`` and return the reply: one whole response, or what came before the close.

    A request the server is still waiting on (no blank line yet, a body shorter than its
    Content-Length) gets no answer; after FIRST_BYTE_S this side half-closes and the server
    must close too. (Half-closing at once would not do: aiohttp drops a request whose client
    half-closed before the answer.)
    """
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    got = b""
    try:
        writer.write(raw)
        await writer.drain()
        try:
            got = await asyncio.wait_for(reader.read(65536), FIRST_BYTE_S)
        except TimeoutError:
            writer.write_eof()
            while chunk := await reader.read(65536):
                got += chunk
            return got
        head_only = raw.startswith(b"HEAD ")
        while got and not _complete(got, head_only):
            chunk = await reader.read(65536)
            if not chunk:
                break
            got += chunk
    except (ConnectionResetError, BrokenPipeError):
        pass  # the server refused part way (a header too long) and closed: fine
    finally:
        writer.close()
    return got


@pytest.fixture
def loop() -> Iterator[asyncio.AbstractEventLoop]:
    with watched_loop() as fresh:
        yield fresh


def _logged_in(raw: bytes) -> bool:
    """Whether ``raw`` carries Basic credentials with the right password (any user name)."""
    for token in CREDENTIALS.findall(raw):
        with contextlib.suppress(binascii.Error, ValueError):
            if base64.b64decode(token, validate=True).partition(b":")[2] == PASSWORD.encode():
                return True
    return False


def _fuzz(loop: asyncio.AbstractEventLoop, port: int, site: str) -> dict[int, int]:
    """Run FUZZ_EXAMPLES requests against ``port``; return how often each status came."""
    seen: dict[int, int] = {}
    errors_before = {k: v for k, v in REJECTED.items() if k[1] >= 500}

    @settings(max_examples=FUZZ_EXAMPLES, deadline=dt.timedelta(seconds=EXAMPLE_DEADLINE_S),
              database=None,
              suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large,
                                     HealthCheck.large_base_example,
                                     HealthCheck.function_scoped_fixture])
    @given(raw=_requests())
    def run(raw: bytes) -> None:
        with cpu_deadline(EXAMPLE_DEADLINE_S):
            reply = loop.run_until_complete(asyncio.wait_for(_exchange(port, raw),
                                                             EXAMPLE_DEADLINE_S))
        statuses = [int(s) for s in STATUS_LINE.findall(reply)]
        assert reply == b"" or statuses, reply[:200]  # an HTTP answer or a closed connection
        assert all(s < 500 for s in statuses), (statuses, reply[:300])
        assert PASSWORD.encode() not in reply
        if site == "status_page" and 200 in statuses:
            assert _logged_in(raw), raw[:300]  # no way in without the password
        for s in statuses or [0]:
            seen[s] = seen.get(s, 0) + 1

    run()
    assert {k: v for k, v in REJECTED.items() if k[1] >= 500} == errors_before, site
    print(f"{site} fuzz: {sum(seen.values())} replies by status {dict(sorted(seen.items()))}")
    return seen


def _still_serves(loop: asyncio.AbstractEventLoop, port: int, target: str, auth: bool) -> bytes:
    """A valid request gets its 200 (waiting out a login lockout the fuzzer may have caused)."""
    head = f"GET {target} HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n"
    if auth:
        head += f"Authorization: Basic {_b64(f'tech:{PASSWORD}'.encode())}\r\n"
    for _ in range(100):
        reply = loop.run_until_complete(asyncio.wait_for(
            _exchange(port, (head + "\r\n").encode()), EXAMPLE_DEADLINE_S))
        if not reply.startswith(b"HTTP/1.1 429"):
            break
        loop.run_until_complete(asyncio.sleep(0.05))  # the fuzzer's own lockout, 0.2 s
    assert reply.startswith(b"HTTP/1.1 200 "), reply[:200]
    return reply


@pytest.mark.timeout(120 + FUZZ_EXAMPLES // 50)
def test_fuzz_the_status_page(loop: asyncio.AbstractEventLoop,
                              caplog: pytest.LogCaptureFixture) -> None:
    port = free_port()
    # a short lockout: the fuzzer meets 429 now and then without being locked out for a minute
    throttle = LoginThrottle(max_failures=20, window_s=60, lockout_s=0.2, max_failures_all=100)
    runner: Site = loop.run_until_complete(serve_status_page(
        _status, _probe, host="127.0.0.1", port=port, password=PASSWORD, throttle=throttle))
    try:
        seen = _fuzz(loop, port, "status_page")
        page = _still_serves(loop, port, "/api/status", auth=True)
    finally:
        loop.run_until_complete(runner.cleanup())
    assert b'"lamp-3"' in page
    assert seen.get(200, 0) > 0 and seen.get(401, 0) > 0 and seen.get(400, 0) > 0, seen
    assert throttle.failed > 0  # bad credentials reached the check, not only the parser
    assert PASSWORD not in caplog.text and GOOD_AUTH.decode() not in caplog.text


@pytest.mark.timeout(120 + FUZZ_EXAMPLES // 50)
def test_fuzz_the_metrics_endpoint(loop: asyncio.AbstractEventLoop) -> None:
    port = free_port()
    runner: Site = loop.run_until_complete(serve_metrics(
        _status, host="127.0.0.1", port=port))
    try:
        seen = _fuzz(loop, port, "metrics")
        exposition = _still_serves(loop, port, "/metrics", auth=False)
    finally:
        loop.run_until_complete(runner.cleanup())
    assert b"edge_uplink_connected 1" in exposition
    assert b'edge_http_rejected_total{site="metrics",status="400"}' in exposition
    assert seen.get(200, 0) > 0 and seen.get(404, 0) > 0 and seen.get(400, 0) > 0, seen


@pytest.mark.parametrize("serve", ["status_page", "metrics"])
def test_an_expect_header_that_is_not_utf8_gets_a_417(loop: asyncio.AbstractEventLoop,
                                                       serve: str) -> None:
    # the fuzzer's minimal example: aiohttp quoted the value in its 417 text and answered 500
    port = free_port()
    runner: Site = loop.run_until_complete(serve_status_page(
        _status, _probe, host="127.0.0.1", port=port, password=PASSWORD)
        if serve == "status_page" else serve_metrics(_status, host="127.0.0.1", port=port))
    try:
        reply = loop.run_until_complete(_exchange(
            port, b"GET / HTTP/1.1\r\nHost: 127.0.0.1\r\nExpect: \xff\xfe\r\n\r\n"))
        plain = loop.run_until_complete(_exchange(
            port, b"GET / HTTP/1.1\r\nHost: 127.0.0.1\r\nExpect: nope\r\n\r\n"))
    finally:
        loop.run_until_complete(runner.cleanup())
    assert reply.startswith(b"HTTP/1.1 417 "), reply[:200]
    assert plain.startswith(b"HTTP/1.1 417 "), plain[:200]  # aiohttp's own answer, unchanged
