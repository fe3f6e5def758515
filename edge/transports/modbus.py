"""ModbusBus: the only module that imports pymodbus.

One ``ModbusBus`` per configured bus, shared by every device on it:

* one ``asyncio.Lock`` per line (two masters garble an RS-485 line) and an inter-frame gap of
  at least 3.5 characters at the bus baud rate (firmware_notes/modbus-rtu-timing.md);
* a timeout on every request and our own retries (pymodbus' retries and background
  reconnects are switched off so that timing stays ours);
* a per-unit circuit breaker: a dead slave costs at most one timeout, then is only probed
  with backoff, so the other slaves keep their rate (firmware_notes/modbus-rtu-timing.md);
* a unit-id allow-list; pymodbus errors become ``DeviceError`` subclasses here.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import random
import time
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from typing import Any, TypeVar

from pymodbus import FramerType
from pymodbus.client import AsyncModbusSerialClient, AsyncModbusTcpClient
from pymodbus.exceptions import ModbusException

from edge.config import ModbusRtuBus, ModbusTcpBus
from edge.drivers._codecs.modbus_frames import check_crc
from edge.drivers.probe_trace import FUNCTION_NAMES, WireRecord, exception_name, words_hex
from edge.drivers.probe_trace import current as current_probe
from edge.errors import (
    DeviceError,
    DeviceProtocolError,
    DeviceRejectedError,
    DeviceUnavailableError,
)

T = TypeVar("T")
Client = AsyncModbusTcpClient | AsyncModbusSerialClient
BREAKER_BASE_S = 1.0
BREAKER_CAP_S = 60.0
# pymodbus logs frame dumps (">>>>> recv ...") and "Cancel send" at ERROR on its own logger;
# with no logging configured (``edge probe``, ``hil``) Python's last-resort handler prints them
# on the terminal. Every failure is reported as our DeviceError, and a probe shows the wire.
logging.getLogger("pymodbus").setLevel(logging.CRITICAL)


@dataclass(slots=True)
class _Breaker:
    failures: int = 0
    open_until: float = 0.0


@dataclass(slots=True)
class BusStats:
    """Counters per bus (metrics, bench)."""

    requests: int = 0
    timeouts: int = 0
    errors: int = 0
    breaker_skips: int = 0
    bad_frames: int = 0  # bytes came back but never a valid frame (bad CRC, garbage)
    wrong_unit: int = 0  # a valid frame from a unit we did not ask
    busy_s: float = 0.0  # time the line was held


def _cancel_pending() -> bool:
    task = asyncio.current_task()
    return task is not None and task.cancelling() > 0


class ModbusBus:
    """A Modbus line (RTU serial, RTU over TCP, or TCP) shared by the devices on it."""

    def __init__(self, config: ModbusRtuBus | ModbusTcpBus) -> None:
        self.config = config
        self.name = config.name
        self._lock = asyncio.Lock()
        self._client: AsyncModbusTcpClient | AsyncModbusSerialClient | None = None
        self._last_frame_end = 0.0
        self._breakers: dict[int, _Breaker] = {}
        self.stats = BusStats()
        self._gap_s = config.gap_s if isinstance(config, ModbusRtuBus) else 0.0
        self._rx_seen = 0  # receive callbacks, to tell a garbled reply from silence
        self._rx_last = b""  # what pymodbus held when it last got bytes (it drops bad frames)

    def describe(self) -> str:
        """Return where the line goes (``bus covers (modbus_tcp 127.0.0.1:502)``)."""
        cfg = self.config
        where = f"{cfg.host}:{cfg.port}" if isinstance(cfg, ModbusTcpBus) else \
            f"{cfg.port} {cfg.baud} {cfg.parity}{cfg.stop_bits}"
        return f"bus {self.name} ({cfg.type} {where})"

    def _record(self, unit_id: int, request: str, raw: str = "", error: str = "") -> None:
        trace = current_probe()
        if trace is not None:
            trace.add(WireRecord(self.describe(), unit_id, request, raw, error))

    def _trace(self, sending: bool, data: bytes) -> bytes:
        if not sending and data:
            self._rx_seen += 1
            self._rx_last = bytes(data[-260:])  # an RTU frame is at most 256 bytes
        return data

    def _classify_dropped(self, device: str, unit_id: int) -> DeviceProtocolError:
        """Name what pymodbus silently dropped: a frame from another unit, or noise."""
        tcp = isinstance(self.config, ModbusTcpBus)
        body = _mbap_body(self._rx_last) if tcp else _rtu_body(self._rx_last)
        if body and body[0] != unit_id:
            self.stats.wrong_unit += 1
            return DeviceProtocolError(device, f"unit {unit_id}: reply from unit {body[0]}, "
                                               "dropped")
        self.stats.bad_frames += 1
        what = "undecodable reply or noise" if tcp else "garbled reply (bad CRC or noise)"
        return DeviceProtocolError(device, f"unit {unit_id}: {what}, dropped")

    def _make_client(self) -> AsyncModbusTcpClient | AsyncModbusSerialClient:
        cfg = self.config
        common = {"timeout": cfg.timeout_s, "retries": 0, "reconnect_delay": 0.0,
                  "trace_packet": self._trace}
        client: AsyncModbusTcpClient | AsyncModbusSerialClient
        if isinstance(cfg, ModbusTcpBus):
            client = AsyncModbusTcpClient(cfg.host, port=cfg.port, **common)  # type: ignore[arg-type]
        elif cfg.port.startswith("socket://"):  # RTU over TCP (a serial server)
            host, _, port = cfg.port.removeprefix("socket://").rpartition(":")
            client = AsyncModbusTcpClient(host, port=int(port), framer=FramerType.RTU,
                                          **common)  # type: ignore[arg-type]
        else:
            client = AsyncModbusSerialClient(cfg.port, framer=FramerType.RTU, baudrate=cfg.baud,
                                             parity=cfg.parity, stopbits=cfg.stop_bits,
                                             **common)  # type: ignore[arg-type]
        self._drop_undecodable(client)
        return client

    def _drop_undecodable(self, client: AsyncModbusTcpClient | AsyncModbusSerialClient) -> None:
        """Drop a received frame pymodbus cannot decode instead of letting it raise.

        A reply with a function code pymodbus does not know raises ModbusIOException inside
        ``data_received``: asyncio logged "Fatal error" with a traceback and closed the line,
        on every poll of a misbehaving device (found by tests/test_modbus_reply_fuzz.py). The
        bytes are discarded here; the read then times out and is counted as a garbled reply
        (``bad_frames``), logged once per outage like any other (D32,
        firmware_notes/modbus-rtu-timing.md).
        """
        ctx = client.ctx
        parse = ctx.callback_data

        def callback_data(data: bytes, addr: tuple[str, int] | None = None) -> int:
            try:
                return parse(data, addr=addr)
            # pymodbus' PDU decoder raises ModbusIOException for an unknown function code and
            # struct.error for a short body (``10 02 00``): anything from a reply is the peer's
            except Exception:  # noqa: BLE001
                bad_len = _adu_length(ctx.framer, data)
            if 0 < bad_len < len(data):  # only that frame: the good reply behind it still counts
                return bad_len + callback_data(data[bad_len:], addr)
            return len(data)

        ctx.callback_data = callback_data  # type: ignore[method-assign]

    async def _connected(self, device: str) -> AsyncModbusTcpClient | AsyncModbusSerialClient:
        if self._client is not None and self._client.connected:
            return self._client
        await self.close()
        client = self._make_client()
        try:
            ok = await self._guarded(client.connect(), self.config.timeout_s + 1.0)
        except (TimeoutError, OSError, ModbusException) as exc:
            client.close()
            raise DeviceUnavailableError(device, f"bus {self.name}: cannot connect: {exc}") \
                from exc
        except asyncio.CancelledError:
            client.close()
            raise
        if not ok:
            client.close()
            raise DeviceUnavailableError(device, f"bus {self.name}: cannot connect")
        self._client = client
        return client

    async def close(self) -> None:
        """Close the line (reopened on the next request)."""
        if self._client is not None:
            with contextlib.suppress(Exception):
                self._client.close()
            self._client = None

    def _check_unit(self, device: str, unit_id: int) -> None:
        allowed = self.config.allowed_unit_ids
        if allowed is not None and unit_id not in allowed:
            self._record(unit_id, "(not sent)", error=exception_name(-1))
            raise DeviceRejectedError(device, unit_id=unit_id, address=0, exception_code=-1,
                                      name=exception_name(-1))

    def _breaker_open(self, unit_id: int) -> bool:
        breaker = self._breakers.get(unit_id)
        return breaker is not None and time.monotonic() < breaker.open_until

    def _trip(self, unit_id: int) -> None:
        breaker = self._breakers.setdefault(unit_id, _Breaker())
        breaker.failures += 1
        # full jitter keeps several dead slaves from being probed in lockstep
        backoff = min(BREAKER_CAP_S, BREAKER_BASE_S * 2 ** (breaker.failures - 1))
        breaker.open_until = time.monotonic() + random.uniform(backoff / 2, backoff)

    def _reset(self, unit_id: int) -> None:
        self._breakers.pop(unit_id, None)

    async def read(self, device: str, unit_id: int, function: int, address: int,
                   count: int, *, timeout_s: float | None = None) -> list[int]:
        """Read ``count`` registers (FC 3 holding or 4 input); raise DeviceError on failure."""
        self._check_unit(device, unit_id)
        probing = current_probe() is not None
        # a probe goes through an open breaker: it is asked for by a technician (who may
        # just have fixed the wiring), once, not by the poll loop
        if self._breaker_open(unit_id) and not probing:
            self.stats.breaker_skips += 1
            raise DeviceUnavailableError(device, f"unit {unit_id} not answering; next probe "
                                                 "after backoff")
        timeout = timeout_s or self.config.timeout_s
        last_exc: DeviceError | None = None
        for _ in range(self.config.retries + 1):
            try:
                words = await self._transact(device, unit_id, function, address, count, timeout)
            except (DeviceUnavailableError, DeviceProtocolError) as exc:
                last_exc = exc
                continue
            except DeviceRejectedError:
                self._reset(unit_id)  # it answered: alive, just refusing
                raise
            self._reset(unit_id)
            return words
        if not probing:  # the poll loop's backoff is its own; a probe neither adds nor waits
            self._trip(unit_id)
        assert last_exc is not None
        raise last_exc

    async def write_register(self, device: str, unit_id: int, address: int, value: int, *,
                             timeout_s: float | None = None) -> None:
        """Write one holding register (FC 6)."""
        await self._write(device, unit_id, address, value, timeout_s, coil=False)

    async def write_coil(self, device: str, unit_id: int, address: int, value: bool, *,
                         timeout_s: float | None = None) -> None:
        """Write one coil (FC 5)."""
        await self._write(device, unit_id, address, value, timeout_s, coil=True)

    async def read_coils(self, device: str, unit_id: int, address: int, count: int, *,
                         timeout_s: float | None = None) -> list[bool]:
        """Read coils (FC 1)."""
        words = await self.read(device, unit_id, 1, address, count, timeout_s=timeout_s)
        return [bool(w) for w in words]

    async def _write(self, device: str, unit_id: int, address: int, value: int | bool,
                     timeout_s: float | None, *, coil: bool) -> None:
        self._check_unit(device, unit_id)

        def call(client: Client) -> Awaitable[Any]:
            if coil:
                return client.write_coil(address, bool(value), device_id=unit_id)
            return client.write_register(address, int(value), device_id=unit_id)

        request = f"{FUNCTION_NAMES[5 if coil else 6]} 0x{address:04X} = {int(value)}"
        try:
            await self._request(device, unit_id, address, call,
                                timeout_s or self.config.timeout_s)
        except DeviceError as exc:
            self._record(unit_id, request, error=_reason(exc))
            raise
        self._record(unit_id, request, raw="ok")

    async def _request(self, device: str, unit_id: int, address: int,
                       call: Callable[[Client], Awaitable[Any]], timeout_s: float) -> Any:
        """Run one transaction on the line: lock, gap, timeout, errors mapped to ours.

        On TCP a timeout drops the connection: a late answer would be taken for the next
        request. On RTU the port stays open (reopening it costs every slave on the line); a
        late frame fails the next request's unit and CRC checks and is dropped.
        """
        async with self._lock:
            client = await self._connected(device)
            await self._gap()
            started = time.monotonic()
            rx_before = self._rx_seen
            try:
                rr = await self._guarded(call(client), timeout_s)
            except TimeoutError as exc:
                self.stats.timeouts += 1
                if isinstance(self.config, ModbusTcpBus):
                    await self.close()
                if self._rx_seen != rx_before:  # bytes came, but no frame for us
                    raise self._classify_dropped(device, unit_id) from exc
                raise DeviceUnavailableError(device, f"unit {unit_id}: no answer in "
                                                     f"{timeout_s:g} s") from exc
            except ModbusException as exc:
                if "device id" in str(exc):  # pymodbus: "request uses device id=X but ..."
                    # another unit answered (a late reply, a duplicate address): drop the
                    # frame; the port stays open (reopening costs every slave on the line)
                    self.stats.wrong_unit += 1
                    raise DeviceProtocolError(device, f"unit {unit_id}: reply from another "
                                                      "unit, dropped") from exc
                self.stats.errors += 1
                await self.close()
                raise DeviceUnavailableError(device, f"unit {unit_id}: {exc}") from exc
            finally:
                self._frame_done(started)
        if rr.isError():
            code = int(getattr(rr, "exception_code", 0))
            raise DeviceRejectedError(device, unit_id=unit_id, address=address,
                                      exception_code=code, name=exception_name(code))
        return rr

    async def _guarded(self, call: Awaitable[T], timeout_s: float) -> T:
        """Await a pymodbus call with a timeout, keeping cancellation intact.

        pymodbus turns a ``CancelledError`` into ``ModbusIOException("Request cancelled
        outside library")`` — both our own timeout's and the agent's shutdown. Here the first
        becomes ``TimeoutError`` and the second ``CancelledError`` again, so a driver always
        stops when cancelled (the conformance kit checks it).
        """
        deadline = asyncio.timeout(timeout_s)
        try:
            async with deadline:
                result = await call
        except ModbusException:
            # the timeout context has already withdrawn its own cancellation: whatever
            # request is left came from outside (the agent stopping, an outer timeout)
            if _cancel_pending():
                raise asyncio.CancelledError from None
            if deadline.expired():
                raise TimeoutError from None
            raise
        if _cancel_pending():  # pymodbus may also swallow it and return (connect(): False)
            raise asyncio.CancelledError
        return result

    async def _gap(self) -> None:
        wait = self._last_frame_end + self._gap_s - time.monotonic()
        if wait > 0:
            await asyncio.sleep(wait)

    def _frame_done(self, started: float) -> None:
        self._last_frame_end = time.monotonic()
        self.stats.busy_s += self._last_frame_end - started
        self.stats.requests += 1

    async def _transact(self, device: str, unit_id: int, function: int, address: int,
                        count: int, timeout_s: float) -> list[int]:
        readers = {3: "read_holding_registers", 4: "read_input_registers", 1: "read_coils"}
        if function not in readers:
            raise DeviceRejectedError(device, unit_id=unit_id, address=address,
                                      exception_code=1, name=exception_name(1))

        def call(client: Client) -> Awaitable[Any]:
            method = getattr(client, readers[function])
            return method(address, count=count, device_id=unit_id)  # type: ignore[no-any-return]

        request = f"FC{function} {FUNCTION_NAMES[function]} 0x{address:04X} x{count}"
        try:
            rr = await self._request(device, unit_id, address, call, timeout_s)
            values: Sequence[int | bool] = rr.bits[:count] if function == 1 else rr.registers
            if len(values) != count:
                self.stats.errors += 1
                raise DeviceProtocolError(device, f"unit {unit_id}: asked {count} registers, "
                                                  f"got {len(values)}")
        except DeviceError as exc:
            self._record(unit_id, request, error=_reason(exc))
            raise
        words = [int(v) for v in values]
        self._record(unit_id, request, raw=words_hex(words) if function != 1 else
                     " ".join(str(w) for w in words))
        return words


def _reason(exc: DeviceError) -> str:
    """Return what went wrong without the device name the caller already shows."""
    return exc.detail


def _adu_length(framer: Any, data: bytes) -> int:
    """Return the length of the first frame in ``data`` by its framing alone (0: unknown)."""
    try:
        return int(framer.decode(data)[0])
    except Exception:  # noqa: BLE001 - the framer of a garbled buffer: the whole buffer goes
        return 0


def _rtu_body(frame: bytes) -> bytes:
    """Return unit id + PDU of an RTU frame with a good CRC, else b""."""
    try:
        return check_crc(frame)
    except ValueError:
        return b""


def _mbap_body(frame: bytes) -> bytes:
    """Return unit id + PDU of the last whole Modbus TCP frame (MBAP headers walked), else b"".

    On TCP a reply from another unit was counted as noise (found by the reply fuzzer): the
    unit id is the MBAP header's last byte, after transaction id, protocol id 0 and length.
    """
    body, at = b"", 0
    while len(frame) - at >= 8 and frame[at + 2:at + 4] == b"\x00\x00":
        end = at + 6 + int.from_bytes(frame[at + 4:at + 6], "big")
        if end > len(frame):
            break
        body, at = frame[at + 6:end], end  # several frames in the buffer: the last whole one
    return body
