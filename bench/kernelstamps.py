"""AudioSocket messages with the kernel's receive time of each: when a frame reached the "Asterisk" host.

The generator runs 200 calls on one loop; when it reads a frame depends on what else that loop is doing,
which adds milliseconds to every arrival time it notes and hides how evenly the bridge paced its frames.
Linux stamps each received segment (SO_TIMESTAMPNS) and `recvmsg` returns the stamp of the last segment
it read from, so reading one message at a time (the bridge writes each frame in one segment) gives each
message its own arrival time, however late this loop gets to it. A tcpdump on the link would read the
same times; the frames' order and content are untouched.
"""

from __future__ import annotations

import asyncio
import os
import socket
import struct
import time
from collections import deque
from typing import Any, Final

# Linux's value, for Pythons built without the constant.
SO_TIMESTAMPNS: Final = getattr(socket, "SO_TIMESTAMPNS", 35)
_STAMP = struct.Struct("qq")  # struct timespec: seconds, nanoseconds (CLOCK_REALTIME)
_ANCILLARY = socket.CMSG_SPACE(_STAMP.size)
_HEAD: Final = 3  # type, u16 length


class KernelStampedMessages:
    """Takes over reading of a connected StreamReader's socket: `read()` returns (type, payload,
    `time.monotonic()` when its last byte reached this host). `close()` gives the socket back."""

    def __init__(self, reader: asyncio.StreamReader) -> None:
        transport: Any = reader._transport  # type: ignore[attr-defined]  # asyncio's, not public API
        transport.pause_reading()  # from here on only this reads the socket
        self._loop = asyncio.get_running_loop()
        # Bytes asyncio had read already (none in practice: the bridge speaks after the UUID) get "now".
        buffered: Any = reader._buffer  # type: ignore[attr-defined]
        self._data = bytearray(buffered)
        buffered.clear()
        self._data_at = time.monotonic()
        self._sock = socket.socket(fileno=os.dup(transport.get_extra_info("socket").fileno()))
        self._sock.setblocking(False)
        self._sock.setsockopt(socket.SOL_SOCKET, SO_TIMESTAMPNS, 1)
        self._messages: deque[tuple[int, bytes, float]] = deque()
        self._waiter: asyncio.Future[None] | None = None
        self._eof = False
        self._split()
        self._loop.add_reader(self._sock.fileno(), self._readable)

    async def read(self) -> tuple[int, bytes, float]:
        while not self._messages:
            if self._eof:
                raise asyncio.IncompleteReadError(bytes(self._data), None)
            self._waiter = self._loop.create_future()
            try:
                await self._waiter
            finally:
                self._waiter = None
        return self._messages.popleft()

    def close(self) -> None:
        self._loop.remove_reader(self._sock.fileno())
        self._sock.close()  # the dup only: the transport still owns the connection

    def _need(self) -> int:
        """Bytes still missing from the message being read (its header, then its payload)."""
        if len(self._data) < _HEAD:
            return _HEAD - len(self._data)
        return _HEAD + int.from_bytes(self._data[1:3], "big") - len(self._data)

    def _readable(self) -> None:
        offset = time.time() - time.monotonic()  # the stamps are CLOCK_REALTIME
        while True:
            try:
                chunk, ancillary, _, _ = self._sock.recvmsg(self._need(), _ANCILLARY)
            except (BlockingIOError, InterruptedError):
                break
            except OSError:
                chunk, ancillary = b"", []
            if not chunk:
                self._eof = True
                self._loop.remove_reader(self._sock.fileno())
                break
            self._data += chunk
            self._data_at = time.monotonic()
            for level, kind, value in ancillary:
                if level == socket.SOL_SOCKET and kind == SO_TIMESTAMPNS and len(value) >= _STAMP.size:
                    seconds, nanoseconds = _STAMP.unpack_from(value)
                    self._data_at = seconds + nanoseconds / 1e9 - offset
            self._split()
        if self._waiter is not None and not self._waiter.done():
            self._waiter.set_result(None)

    def _split(self) -> None:
        while self._need() == 0:
            length = int.from_bytes(self._data[1:3], "big")
            self._messages.append((self._data[0], bytes(self._data[_HEAD : _HEAD + length]), self._data_at))
            del self._data[: _HEAD + length]
