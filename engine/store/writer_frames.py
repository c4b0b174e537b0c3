"""The writer process's wire format, shared by both ends (see engine/store/writer.py): frames of
a 4-byte little-endian length and a pickle. Standard library only: the writer process imports it
at start, and every import there costs each store that opens."""

from __future__ import annotations

import pickle
from typing import Any

LENGTH = 4


def frame(value: Any) -> bytes:
    data = pickle.dumps(value, pickle.HIGHEST_PROTOCOL)
    return len(data).to_bytes(LENGTH, "little") + data


class Unreadable:
    """A frame that could not be unpickled (an object whose class cannot be rebuilt on this
    side). Whose jobs it carried is unknown, so the parent fails every write in flight."""

    def __init__(self, why: str) -> None:
        self.why = why


class Frames:
    """Splits a byte stream into the frames `frame` made."""

    __slots__ = ("buffer",)

    def __init__(self) -> None:
        self.buffer = bytearray()

    def feed(self, data: bytes | memoryview) -> list[Any]:
        buffer = self.buffer
        buffer += data
        frames, start = [], 0
        while len(buffer) - start >= LENGTH:
            size = int.from_bytes(buffer[start : start + LENGTH], "little")
            end = start + LENGTH + size
            if len(buffer) < end:
                break
            try:
                frames.append(pickle.loads(memoryview(buffer)[start + LENGTH : end]))
            except Exception as exc:  # noqa: BLE001 - whatever it is, the other side must hear
                frames.append(Unreadable(f"{type(exc).__name__}: {exc}"))
            start = end
        del buffer[:start]
        return frames
