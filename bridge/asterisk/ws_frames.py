"""WebSocket frames as a server writes them (RFC 6455 §5.2): final, unmasked, no extensions. Pure.

The chan_websocket leg writes each of its messages as one such frame straight onto the upgraded
connection's transport: 50 or more a second per call, where aiohttp's `send_bytes` and its writer's
`send_frame` cost two coroutines and their checks per message. aiohttp still reads the socket, answers
pings and closes it; its frames and ours are each one `transport.write`, so they can only follow one
another, never interleave.
"""

from __future__ import annotations

import struct
from typing import Final

OP_TEXT: Final = 0x1
OP_BINARY: Final = 0x2
_FIN: Final = 0x80
_LENGTH_16: Final = struct.Struct("!BBH")  # 126: the length follows in 16 bits
_LENGTH_64: Final = struct.Struct("!BBQ")  # 127: in 64 bits


def server_frame(opcode: int, payload: bytes) -> bytes:
    """One unfragmented frame of `payload` with `opcode` (OP_TEXT: `payload` must be UTF-8)."""
    length = len(payload)
    if length < 126:
        return bytes((_FIN | opcode, length)) + payload
    if length < 0x10000:
        return _LENGTH_16.pack(_FIN | opcode, 126, length) + payload
    return _LENGTH_64.pack(_FIN | opcode, 127, length) + payload
