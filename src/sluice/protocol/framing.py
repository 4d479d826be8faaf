"""Kafka framing: every request and response is a 4-byte big-endian size, then that many bytes.

The size is known before the body arrives, so a server checks ``socket.request.max.bytes``
against :func:`frame_size` and never buffers an oversized frame.
"""

from __future__ import annotations

from sluice.protocol.primitives import I32, Buffer, ProtocolError

SIZE_PREFIX = 4


def frame_size(buf: Buffer, offset: int = 0) -> int | None:
    """The body size of the frame starting at ``buf[offset]``, or None if fewer than 4 bytes
    are there yet. A negative size is a ProtocolError (garbage: close the connection)."""
    if len(buf) - offset < SIZE_PREFIX:
        return None
    size = int(I32.unpack_from(buf, offset)[0])
    if size < 0:
        raise ProtocolError(f"negative frame size {size}")
    return size


class FrameDecoder:
    """Cuts frames out of a byte stream, sans-IO: ``feed`` bytes, get back complete frame bodies
    (without their size prefix). A frame announcing more than ``max_frame_bytes`` raises
    ProtocolError as soon as its 4 size bytes are seen."""

    __slots__ = ("_buf", "max_frame_bytes")

    def __init__(self, max_frame_bytes: int = 100 * 1024 * 1024) -> None:
        self.max_frame_bytes = max_frame_bytes
        self._buf = bytearray()

    @property
    def buffered(self) -> int:
        return len(self._buf)

    def feed(self, data: Buffer) -> list[bytearray]:
        self._buf += data
        frames: list[bytearray] = []
        buf = self._buf
        pos = 0
        while True:
            size = frame_size(buf, pos)
            if size is None:
                break
            if size > self.max_frame_bytes:
                raise ProtocolError(f"frame of {size} bytes exceeds {self.max_frame_bytes}")
            end = pos + SIZE_PREFIX + size
            if end > len(buf):
                break
            frames.append(buf[pos + SIZE_PREFIX : end])
            pos = end
        if pos:
            del buf[:pos]
        return frames
