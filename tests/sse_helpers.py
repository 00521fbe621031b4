"""Reading a Server-Sent Events response in tests, event by event."""

from __future__ import annotations

import asyncio
import json
from typing import Any

# A guard against a hung test only; nothing asserts on time.
GUARD = 30


class Stream:
    """An operator's open SSE stream, read event by event."""

    def __init__(self, response: Any) -> None:
        self.response = response

    async def next(self) -> tuple[str, Any]:
        async def read() -> tuple[str, Any]:
            event, data = "message", list[str]()
            while True:
                raw = await self.response.content.readline()
                assert raw, "the stream ended"
                line = raw.decode().rstrip("\r\n")
                if line == "":
                    if data:
                        return event, json.loads("\n".join(data))
                    continue
                if line.startswith(":"):
                    continue
                key, _, value = line.partition(":")
                value = value.removeprefix(" ")
                if key == "event":
                    event = value
                elif key == "data":
                    data.append(value)

        return await asyncio.wait_for(read(), GUARD)
