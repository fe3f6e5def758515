"""An IP speaker on an MQTT broker (firmware_notes/ip-speaker.md): plays, stops, reports."""

from __future__ import annotations

import asyncio
import contextlib
import json

from edge.transports.mqtt import MqttLink

CLIP_PLAY_S = 0.3  # how long the simulator "plays" any clip: short, so tests stay quick


class IpSpeakerSim:
    """Subscribes ``{topic}/play`` and ``/stop``; publishes ``{topic}/status`` every 0.5 s.

    A play is a text (50 ms a character) or a stored clip (``CLIP_PLAY_S``).
    """

    def __init__(self, host: str, port: int, topic: str) -> None:
        self.host, self.port, self.topic = host, port, topic
        self.spoken: list[str] = []
        self.clips: list[tuple[str, str]] = []  # (name, sha256) of each clip played
        self.amp_fault = False
        self.silent = False  # stops publishing status (a dead speaker)
        self._playing: str | None = None
        self._link: MqttLink | None = None
        self._tasks: list[asyncio.Task[None]] = []

    async def start(self) -> None:
        """Connect and serve."""
        self._link = MqttLink(host=self.host, port=self.port, client_id="ip-speaker-sim",
                              protocol="5", keepalive_s=30, connect_timeout_s=5, tls=None)
        await self._link.connect()
        await self._link.subscribe(f"{self.topic}/play")
        await self._link.subscribe(f"{self.topic}/stop")
        self._tasks = [asyncio.create_task(self._serve(self._link)),
                       asyncio.create_task(self._status(self._link))]

    async def _status(self, link: MqttLink) -> None:
        while True:
            if not self.silent:
                state = {"state": "playing" if self._playing else "idle",
                         "amp_fault": self.amp_fault}
                link.publish(f"{self.topic}/status", json.dumps(state).encode())
            await asyncio.sleep(0.5)

    async def _serve(self, link: MqttLink) -> None:
        while True:
            item = await link.inbound.get()
            if item.topic.endswith("/stop"):
                self._playing = None
                continue
            doc = json.loads(item.payload)
            self._playing = doc["id"]
            if "clip" in doc:  # a stored clip: played for a fixed time, whatever its name
                self.clips.append((doc["clip"], doc["sha256"]))
                await asyncio.sleep(CLIP_PLAY_S)
            else:
                self.spoken.append(doc["text"])
                await asyncio.sleep(0.05 * len(doc["text"]))
            result = "played" if self._playing == doc["id"] else "interrupted"
            self._playing = None
            if not self.silent:
                link.publish(f"{self.topic}/status", json.dumps(
                    {"id": doc["id"], "result": result, "state": "idle",
                     "amp_fault": self.amp_fault}).encode())

    async def stop(self) -> None:
        """Disconnect."""
        for task in self._tasks:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
        if self._link is not None:
            await self._link.close()
