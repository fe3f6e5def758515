"""Fuzz Modbus replies on the agent's own path (issue 14, every entry point): ``ModbusBus``
(pymodbus underneath) against a garbage peer on 127.0.0.1 that answers each request with bytes
chosen by hypothesis — noise, valid frames cut short or run on, wrong transaction ids, unit
ids, function codes, byte counts and lengths, exception replies with any code, bad CRCs.

Every read or write ends within its timeout with a value or one of the project's own errors
(``edge.errors.DeviceError``, stable ``code``), never a raw pymodbus or struct exception,
never a hang; an exactly valid reply decodes to what was sent; an exception reply is
``DeviceRejectedError`` with its code; the counters (timeouts, bad_frames, wrong_unit) move;
and after every example a good reply decodes again. Both framings a bus can have: Modbus TCP,
and RTU over TCP (``socket://``, the same RTU framer a serial port uses).

Each example costs a socket round trip, and a reply that never completes costs its read
timeout, so examples are far slower than a parser's: 60 + 120 in ``make test``, FUZZ_EXAMPLES
under ``make faults`` capped at ~10 min a framing (CAP, below). Per-example deadline:
``asyncio.wait_for`` and a SIGVTALRM timer on the process's CPU time.

Found and fixed: a reply with a function code pymodbus cannot decode made pymodbus raise inside
``data_received`` (asyncio logged "Fatal error" with a traceback on every poll); on TCP a reply
from another unit was counted as noise. Both are asserted now.
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
import logging
import os
import struct
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from edge.config import ModbusRtuBus, ModbusTcpBus
from edge.drivers._codecs.modbus_frames import with_crc
from edge.errors import (
    DeviceError,
    DeviceProtocolError,
    DeviceRejectedError,
    DeviceUnavailableError,
)
from edge.transports import modbus
from edge.transports.modbus import ModbusBus
from tests.fuzz_watchdog import cpu_deadline, watched_loop

pytestmark = pytest.mark.reliability

# Examples per framing. Measured on the 2-core box: TCP ~9/s (a reply that never completes
# costs its timeout, then pymodbus' reconnect sleeps 0.1 s), RTU over TCP ~18/s (the line stays
# open). make test: a few seconds each. make faults (FUZZ_EXAMPLES=100000 would take 3 h and
# 1.5 h): capped at ~10 min each.
SHORT = {"tcp": 60, "rtu": 120}
CAP = {"tcp": 5_000, "rtu": 10_000}
FUZZ_ENV = os.environ.get("FUZZ_EXAMPLES")


def examples(framing: str) -> int:
    """How many examples to run for ``framing`` in this run."""
    return min(int(FUZZ_ENV), CAP[framing]) if FUZZ_ENV else SHORT[framing]


READ_TIMEOUT_S = 0.05  # a garbled reply costs this; loopback answers in ~1 ms
GOOD_TIMEOUT_S = 2.0  # the good read after each example: generous on a loaded box
EXAMPLE_DEADLINE_S = 5.0
CODES = {DeviceUnavailableError.code, DeviceProtocolError.code, DeviceRejectedError.code}

Reply = tuple[list[bytes], str]  # chunks written in turn, then "keep" | "close"


@dataclass
class GarbagePeer:
    """A Modbus "slave" on loopback that answers each request as ``answer`` says."""

    rtu: bool
    answer: Callable[[bytes], Reply] = field(default=lambda request: ([], "keep"))
    requests: int = 0
    _server: asyncio.Server | None = None

    @property
    def request_size(self) -> int:
        return 8 if self.rtu else 12  # FC 1/3/4/5/6: fixed-size requests

    async def start(self) -> int:
        self._server = await asyncio.start_server(self._serve, "127.0.0.1", 0)
        return int(self._server.sockets[0].getsockname()[1])

    async def stop(self) -> None:
        assert self._server is not None
        self._server.close()
        with contextlib.suppress(Exception):
            await asyncio.wait_for(self._server.wait_closed(), 2)

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            while True:
                request = await reader.readexactly(self.request_size)
                self.requests += 1
                chunks, then = self.answer(request)
                for chunk in chunks:
                    writer.write(chunk)
                    await writer.drain()
                if then == "close":
                    break
        except (asyncio.IncompleteReadError, ConnectionError):
            pass
        finally:
            writer.close()


def good_reply(request: bytes, rtu: bool, values: list[int]) -> bytes:
    """The exact reply a correct slave sends to ``request`` (``values`` for a read)."""
    head, pdu = (request[:1], request[1:6]) if rtu else (request[:7], request[7:])
    function = pdu[0]
    count = struct.unpack(">H", pdu[3:5])[0]
    if function in (5, 6):
        body = pdu  # a write is echoed
    elif function == 1:
        bits = [v & 1 for v in (values * count)[:count]]
        packed = bytes(sum(b << i for i, b in enumerate(bits[n:n + 8]))
                       for n in range(0, count, 8))
        body = bytes([1, len(packed)]) + packed
    else:
        words = [v & 0xFFFF for v in (values * count)[:count]]
        body = bytes([function, 2 * count]) + struct.pack(f">{count}H", *words)
    if rtu:
        return with_crc(head + body)
    return head[:4] + struct.pack(">H", len(body) + 1) + head[6:7] + body


def expected(request: bytes, rtu: bool, values: list[int]) -> list[int] | None:
    """What a read returns for ``good_reply``; None for a write."""
    pdu = request[1:6] if rtu else request[7:]
    count = struct.unpack(">H", pdu[3:5])[0]
    if pdu[0] == 1:
        return [v & 1 for v in (values * count)[:count]]
    if pdu[0] in (3, 4):
        return [v & 0xFFFF for v in (values * count)[:count]]
    return None


@dataclass(frozen=True)
class Plan:
    """How the peer answers one request."""

    kind: str
    values: list[int]
    noise: bytes = b"\x00"
    at: int = 0  # a byte position (truncate, split, flip) or a replacement value
    then: str = "keep"

    def reply(self, request: bytes, rtu: bool) -> Reply:  # noqa: PLR0911 (a return a kind)
        """The chunks to write for ``request``, then whether to close."""
        good = good_reply(request, rtu, self.values)
        h = 1 if rtu else 7  # where the PDU starts
        if self.kind == "good":
            return [good], self.then
        if self.kind == "split":  # a valid frame in two writes
            cut = self.at % len(good)
            return [good[:cut], good[cut:]], self.then
        if self.kind == "exception":
            pdu = bytes([request[h] | 0x80, self.at & 0xFF])
            frame = with_crc(request[:1] + pdu) if rtu else \
                request[:4] + struct.pack(">H", 3) + request[6:7] + pdu
            return [frame], self.then
        if self.kind == "noise":
            return [self.noise], self.then
        if self.kind == "noise_then_good":
            return [self.noise, good], self.then
        if self.kind == "good_then_noise":
            return [good + self.noise], self.then
        if self.kind == "truncated":
            return [good[:self.at % len(good)]], self.then
        return [self.mutated(good, rtu)], self.then

    def mutated(self, good: bytes, rtu: bool) -> bytes:
        """``good`` with one bit flipped or one field replaced (an RTU frame's CRC is
        recomputed for a field: the field is what is wrong, not the checksum)."""
        frame = bytearray(good)
        if self.kind == "flip":
            frame[self.at % len(frame)] ^= 1 << (self.at % 8)
            return bytes(frame)
        offsets = {"unit": 0, "function": 1, "byte_count": 2} if rtu else \
            {"tid": 0, "protocol": 2, "length": 4, "unit": 6, "function": 7, "byte_count": 8}
        if self.kind in offsets:
            start, width = offsets[self.kind], 2 if self.kind in ("tid", "protocol",
                                                                   "length") else 1
        else:  # "byte": any byte of the frame (an RTU frame's CRC excepted)
            start, width = self.at % (len(frame) - 2 if rtu else len(frame)), 1
        value = self.noise[0] if width == 1 else int.from_bytes((self.noise * 2)[:2], "big")
        frame[start:start + width] = value.to_bytes(width, "big")
        return with_crc(bytes(frame[:-2])) if rtu else bytes(frame)

    def sent(self, request: bytes, rtu: bool) -> str:
        """What the peer really sent: a mutation that changed nothing was a good reply."""
        if rtu and self.kind in ("tid", "protocol", "length"):
            return "byte"  # no MBAP header: mutated() changed one byte of the frame
        chunks, _ = self.reply(request, rtu)
        if self.kind not in ("good", "split") and b"".join(chunks) == good_reply(
                request, rtu, self.values):
            return "good"
        if self.kind == "tid" and not (self.noise * 2)[:2].strip(b"\x00"):
            return "tid0"  # pymodbus takes transaction id 0 for any (devices that send 0)
        return self.kind


KINDS = ["good", "good", "split", "exception", "exception", "noise", "noise_then_good",
         "good_then_noise", "truncated", "truncated", "flip", "unit", "unit", "function",
         "byte_count", "byte", "tid", "protocol", "length"]  # the last three: TCP only
# a reply that is complete at once returns at once: a long timeout costs nothing and keeps a
# loaded CI box from timing out the replies whose value or error the test checks
COMPLETE = {"good", "split", "exception"}
MUST_FAIL = {"unit", "tid", "protocol"}  # another unit's or transaction's reply: never a value
PLANS = st.builds(
    Plan, kind=st.sampled_from(KINDS),
    values=st.lists(st.integers(0, 0xFFFF), min_size=1, max_size=8),
    noise=st.binary(min_size=1, max_size=300), at=st.integers(0, 0xFFFF),
    then=st.sampled_from(["keep", "keep", "keep", "close"]))
# what the bus is asked: FC 3/4 reads of 1-125 registers, FC 1 coils, FC 5/6 writes
OPERATIONS = st.tuples(st.sampled_from([3, 3, 4, 1, 5, 6]), st.integers(1, 247),
                       st.integers(0, 0xFFFF), st.integers(1, 125) | st.integers(1, 4))


class _Tracebacks(logging.Handler):
    """Counts the asyncio loop's "Fatal error" records (an exception out of a protocol)."""

    def __init__(self) -> None:
        super().__init__(logging.ERROR)
        self.records: dict[str, int] = {}

    def emit(self, record: logging.LogRecord) -> None:
        exc = record.exc_info[1] if record.exc_info else None
        key = f"{record.getMessage()[:40]} {type(exc).__name__}: {exc}"
        self.records[key] = self.records.get(key, 0) + 1



@pytest.fixture
def loop(monkeypatch: pytest.MonkeyPatch) -> Iterator[asyncio.AbstractEventLoop]:
    # a unit's breaker would turn the next example into a skip; here every request goes out
    monkeypatch.setattr(modbus, "BREAKER_BASE_S", 0.0)
    with watched_loop() as fresh:
        yield fresh


async def _operate(bus: ModbusBus, op: tuple[int, int, int, int], timeout_s: float
                   ) -> list[int] | None:
    function, unit, address, count = op
    if function == 5:
        await bus.write_coil("fz", unit, address, bool(count & 1), timeout_s=timeout_s)
        return None
    if function == 6:
        await bus.write_register("fz", unit, address, count, timeout_s=timeout_s)
        return None
    if function == 1:
        return [int(b) for b in await bus.read_coils("fz", unit, address, count,
                                                      timeout_s=timeout_s)]
    return await bus.read("fz", unit, function, address, count, timeout_s=timeout_s)


def _run(loop: asyncio.AbstractEventLoop, bus: ModbusBus, op: tuple[int, int, int, int],
         timeout_s: float) -> tuple[list[int] | DeviceError | None, float]:
    """One operation under the deadlines: (its value or its DeviceError, seconds taken)."""
    started = time.monotonic()
    with cpu_deadline(EXAMPLE_DEADLINE_S):
        try:
            out: list[int] | DeviceError | None = loop.run_until_complete(
                asyncio.wait_for(_operate(bus, op, timeout_s), EXAMPLE_DEADLINE_S))
        except DeviceError as exc:
            out = exc
    return out, time.monotonic() - started


def _fuzz(loop: asyncio.AbstractEventLoop, rtu: bool) -> None:
    peer = GarbagePeer(rtu)
    port = loop.run_until_complete(peer.start())
    config: ModbusRtuBus | ModbusTcpBus = ModbusRtuBus(
        name="fz", type="modbus_rtu", port=f"socket://127.0.0.1:{port}", baud=115200,
        timeout_s=READ_TIMEOUT_S, retries=0, inter_frame_gap_s=0) if rtu else ModbusTcpBus(
        name="fz", type="modbus_tcp", host="127.0.0.1", port=port, timeout_s=READ_TIMEOUT_S,
        retries=0)
    bus = ModbusBus(config)
    seen: dict[str, int] = {}
    started = time.monotonic()

    count = examples("rtu" if rtu else "tcp")

    @settings(max_examples=count, deadline=dt.timedelta(seconds=2 * EXAMPLE_DEADLINE_S),
              database=None,
              suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture])
    @given(plan=PLANS, op=OPERATIONS)
    def run(plan: Plan, op: tuple[int, int, int, int]) -> None:
        requests: list[bytes] = []

        def answer(request: bytes) -> Reply:
            requests.append(request)
            return plan.reply(request, rtu)

        peer.answer = answer
        timeout_s = GOOD_TIMEOUT_S if plan.kind in COMPLETE else READ_TIMEOUT_S
        out, took_s = _run(loop, bus, op, timeout_s)
        # one request, one timeout (no retries), a reconnect at most: far below the deadline
        assert took_s < timeout_s + 1.5, (took_s, plan, op)
        assert len(requests) <= 1, requests  # no retries were configured
        if isinstance(out, DeviceError):
            assert out.code in CODES, (out.code, out)
        kind = plan.sent(requests[0], rtu) if requests else "not sent"
        key = f"{kind}:{type(out).__name__ if isinstance(out, DeviceError) else 'value'}"
        seen[key] = seen.get(key, 0) + 1
        if kind in ("good", "split"):
            assert out == expected(requests[0], rtu, plan.values), (out, plan, op)
        if kind == "exception":
            assert isinstance(out, DeviceRejectedError), (out, plan, op)
            assert out.exception_code == plan.at & 0xFF
        if kind in MUST_FAIL:
            assert isinstance(out, DeviceError), (out, plan, op)
        # then a good reply decodes, whatever the garbage left on the line
        good = Plan("good", [0x1234, 0xBEEF, 7])
        peer.answer = lambda request: good.reply(request, rtu)
        after, _ = _run(loop, bus, (3, 17, 0x10, 3), GOOD_TIMEOUT_S)
        assert after == [0x1234, 0xBEEF, 7], (after, plan, op)

    tracebacks = _Tracebacks()
    logging.getLogger("asyncio").addHandler(tracebacks)
    try:
        run()
    finally:
        logging.getLogger("asyncio").removeHandler(tracebacks)
        loop.run_until_complete(bus.close())
        loop.run_until_complete(peer.stop())
    rate = count / (time.monotonic() - started)
    stats = bus.stats
    print(f"modbus {'rtu' if rtu else 'tcp'} reply fuzz: {count} examples, "
          f"{rate:.0f}/s; {stats}; {dict(sorted(seen.items()))}; "
          f"asyncio tracebacks {tracebacks.records}")
    assert stats.timeouts > 0 and stats.bad_frames + stats.wrong_unit > 0, stats
    # a valid frame from another unit is named as such, on RTU and on TCP (MBAP unit id)
    assert stats.wrong_unit > 0 or seen.get("unit:DeviceProtocolError", 0) == 0, (stats, seen)
    # an undecodable frame is dropped and counted, never a traceback out of the protocol
    assert tracebacks.records == {}, tracebacks.records


@pytest.mark.timeout(120 + examples("tcp") // 3)
def test_fuzz_modbus_tcp_replies(loop: asyncio.AbstractEventLoop) -> None:
    _fuzz(loop, rtu=False)


@pytest.mark.timeout(120 + examples("rtu") // 6)
def test_fuzz_modbus_rtu_over_tcp_replies(loop: asyncio.AbstractEventLoop) -> None:
    _fuzz(loop, rtu=True)


def _mbap(request: bytes, pdu: bytes) -> bytes:
    """A Modbus TCP frame answering ``request`` (its transaction and unit id) with ``pdu``."""
    return request[:4] + struct.pack(">H", len(pdu) + 1) + request[6:7] + pdu


@pytest.mark.parametrize(("name", "bad_pdu"), [
    ("short body of a known function (struct.error)", bytes.fromhex("100200")),
    ("unknown function code (ModbusIOException)", bytes.fromhex("4302abcd")),
])
def test_an_undecodable_frame_before_the_good_reply_is_dropped_alone(
        loop: asyncio.AbstractEventLoop, name: str, bad_pdu: bytes) -> None:
    """Found by the review of the reply fuzzer's fix: a ``10 02 00`` reply still raised out of
    ``data_received`` (struct.error), and a bad frame threw away the good reply behind it."""
    values = [0x1234, 0xBEEF, 7]
    peer = GarbagePeer(rtu=False)
    peer.answer = lambda request: (
        [_mbap(request, bad_pdu) + good_reply(request, rtu=False, values=values)], "keep")
    port = loop.run_until_complete(peer.start())
    bus = ModbusBus(ModbusTcpBus(name="fz", type="modbus_tcp", host="127.0.0.1", port=port,
                                 timeout_s=GOOD_TIMEOUT_S, retries=0))
    tracebacks = _Tracebacks()
    logging.getLogger("asyncio").addHandler(tracebacks)
    try:
        out, _took_s = _run(loop, bus, (3, 17, 0x10, 3), GOOD_TIMEOUT_S)
        # alone, the bad frame is a garbled reply within the timeout, never a traceback
        peer.answer = lambda request: ([_mbap(request, bad_pdu)], "keep")
        alone, took_s = _run(loop, bus, (3, 17, 0x10, 3), 0.2)
    finally:
        logging.getLogger("asyncio").removeHandler(tracebacks)
        loop.run_until_complete(bus.close())
        loop.run_until_complete(peer.stop())
    assert out == values, (name, out)
    assert isinstance(alone, DeviceProtocolError), (name, alone)
    assert took_s < 1.5
    assert tracebacks.records == {}, tracebacks.records
