"""Sequence numbers in the first samples of each 20 ms frame, so a frame can be matched across the bridge.

A mark is 10 symbols: 4 fixed magic symbols, the 16-bit sequence number as 4 nibbles, then an 8-bit check
as 2 nibbles. Each symbol is one sample whose value is one of 16 quiet levels (below -38 dBFS), so the mark
sounds like a faint 50 Hz tick and does not change what the VAD decides about the speech around it. The
symbols are written in the leg's own encoding (µ-law codes or s16le samples): a path that moves the bytes
untouched (the echo provider on a matching leg) returns them bit-exact; any resampling or transcoding
destroys them, and `find_marks` then finds nothing rather than something wrong.
"""

from __future__ import annotations

from typing import Final, Literal

Encoding = Literal["ulaw", "slin"]

MAGIC: Final = (0xA, 0x5, 0xC, 0x3)
SYMBOLS: Final = 10  # magic 4 + sequence 4 + check 2
SEQ_MODULUS: Final = 1 << 16

# µ-law: segment-0 codes (|value| <= 120 of 32767), signs alternating so the mark has no DC.
_ULAW_CODES: Final = tuple((0xF0 if n % 2 == 0 else 0x70) | n for n in range(16))
# s16: odd multiples of 20 in -300..300 (-41 dBFS at most).
_SLIN_LEVELS: Final = tuple((2 * n - 15) * 20 for n in range(16))


def encoding_of(format_name: str) -> Encoding | None:
    """Which symbol alphabet a leg format uses; None when marks cannot be carried (A-law is not needed)."""
    if format_name == "ulaw":
        return "ulaw"
    if format_name.startswith("slin"):
        return "slin"
    return None


def check_byte(seq: int) -> int:
    """An 8-bit check that depends on every bit of `seq`, so a stray magic match is rejected."""
    return ((seq >> 8) * 31 + (seq & 0xFF) * 7 + 0x3B) & 0xFF


def symbols(seq: int) -> tuple[int, ...]:
    s = seq % SEQ_MODULUS
    check = check_byte(s)
    return (*MAGIC, (s >> 12) & 15, (s >> 8) & 15, (s >> 4) & 15, s & 15, check >> 4, check & 15)


def encode_symbols(values: tuple[int, ...], encoding: Encoding) -> bytes:
    if encoding == "ulaw":
        return bytes(_ULAW_CODES[v] for v in values)
    return b"".join(_SLIN_LEVELS[v].to_bytes(2, "little", signed=True) for v in values)


def mark_bytes(seq: int, encoding: Encoding) -> bytes:
    return encode_symbols(symbols(seq), encoding)


def stamp(frame: bytes, seq: int, encoding: Encoding) -> bytes:
    """`frame` with its first samples replaced by the mark of `seq` (the frame keeps its length)."""
    mark = mark_bytes(seq, encoding)
    if len(frame) < len(mark):
        raise ValueError(f"a {len(frame)}-byte frame is too short for a {len(mark)}-byte mark")
    return mark + frame[len(mark) :]


_MAGIC_BYTES: Final = {enc: encode_symbols(MAGIC, enc) for enc in ("ulaw", "slin")}
_ULAW_DECODE: Final = {code: n for n, code in enumerate(_ULAW_CODES)}
_SLIN_DECODE: Final = {level.to_bytes(2, "little", signed=True): n for n, level in enumerate(_SLIN_LEVELS)}


def _decode_at(data: bytes, pos: int, encoding: Encoding) -> int | None:
    """The sequence number of a mark whose magic starts at `pos`, or None if the rest is not a valid mark."""
    nibbles: list[int] = []
    if encoding == "ulaw":
        body = data[pos + 4 : pos + SYMBOLS]
        if len(body) < SYMBOLS - 4:
            return None
        for code in body:
            n = _ULAW_DECODE.get(code)
            if n is None:
                return None
            nibbles.append(n)
    else:
        start, end = pos + 8, pos + 2 * SYMBOLS
        if end > len(data):
            return None
        for i in range(start, end, 2):
            m = _SLIN_DECODE.get(data[i : i + 2])
            if m is None:
                return None
            nibbles.append(m)
    seq = (nibbles[0] << 12) | (nibbles[1] << 8) | (nibbles[2] << 4) | nibbles[3]
    if (nibbles[4] << 4 | nibbles[5]) != check_byte(seq):
        return None
    return seq


def find_marks(data: bytes, encoding: Encoding) -> list[tuple[int, int]]:
    """Every valid mark in `data` as (byte offset, sequence number), in order.

    Searches the whole message, not just frame boundaries, so re-chunked audio is still matched; a mark
    split across two messages is lost (counted as unmatched by the caller).
    """
    magic = _MAGIC_BYTES[encoding]
    out: list[tuple[int, int]] = []
    pos = data.find(magic)
    while pos >= 0:
        if encoding == "ulaw" or pos % 2 == 0:
            seq = _decode_at(data, pos, encoding)
            if seq is not None:
                out.append((pos, seq))
        pos = data.find(magic, pos + 1)
    return out


class MarkTable:
    """Fast matching for a known set of sequence numbers: one `find` plus one dict lookup per mark
    (the load generator checks every arriving message; the generic decoder costs ~10x more)."""

    def __init__(self, encoding: Encoding, seqs: range) -> None:
        self.encoding = encoding
        self._magic = _MAGIC_BYTES[encoding]
        self._table = {mark_bytes(s, encoding): s % SEQ_MODULUS for s in seqs}
        self._length = len(self._magic) * SYMBOLS // len(MAGIC)

    def find(self, data: bytes) -> list[int]:
        """Sequence numbers of the table's marks found in `data`, in order."""
        out: list[int] = []
        magic, table, length = self._magic, self._table, self._length
        pos = data.find(magic)
        while pos >= 0:
            seq = table.get(data[pos : pos + length])
            if seq is not None:
                out.append(seq)
                pos = data.find(magic, pos + length)
            else:
                pos = data.find(magic, pos + 1)
        return out
