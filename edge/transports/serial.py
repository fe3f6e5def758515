"""SerialPort: the only module that imports pyserial (through pyserial-asyncio-fast).

A port is a device path (``/dev/ttyUSB0``) or a pyserial URL. ``socket://host:port`` (a serial
server, or a simulator in ``hil/sims``) is opened as a plain TCP stream.
"""

from __future__ import annotations

import asyncio
import contextlib

import serial
import serial_asyncio_fast

from edge.errors import DeviceUnavailableError


class SerialPort:
    """An injected byte stream; ``open()`` returns asyncio streams, ``close()`` ends them."""

    def __init__(self, url: str, baud: int, *, open_timeout_s: float = 5.0) -> None:
        self.url = url
        self.baud = baud
        self.open_timeout_s = open_timeout_s
        self._writer: asyncio.StreamWriter | None = None

    async def open(self, device: str) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
        """Open the port; raise DeviceUnavailableError when it is absent or refused."""
        await self.close()
        try:
            async with asyncio.timeout(self.open_timeout_s):
                if self.url.startswith("socket://"):
                    host, _, port = self.url.removeprefix("socket://").rpartition(":")
                    reader, writer = await asyncio.open_connection(host, int(port))
                else:
                    # exclusive: a second opener (`edge check` beside the agent) fails here
                    # instead of becoming a second master on the line (review finding 9)
                    reader, writer = await serial_asyncio_fast.open_serial_connection(
                        url=self.url, baudrate=self.baud, exclusive=True)
        except (OSError, TimeoutError, serial.SerialException, ValueError) as exc:
            raise DeviceUnavailableError(device, f"cannot open {self.url}: {exc}") from exc
        self._writer = writer
        return reader, writer

    async def close(self) -> None:
        """Close the port if open."""
        writer, self._writer = self._writer, None
        if writer is not None:
            writer.close()
            with contextlib.suppress(Exception):
                async with asyncio.timeout(1.0):
                    await writer.wait_closed()
