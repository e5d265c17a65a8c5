"""Asterisk AudioSocket framing, sans-I/O: `type (1 byte) | length (u16 big-endian) | payload`.

`AudioSocketParser.feed(data)` takes TCP bytes split anywhere and returns the messages completed so far
as events; the same bytes give the same events however they are split. Malformed input never raises: it
becomes a `ProtocolError` event, after which the parser is `closed` and ignores further input (the
stream cannot be trusted any more; the driver ends the call). A `Hangup` also closes it.

Validation is by message kind and happens as soon as the header is in: unknown types, a UUID that is not
16 bytes, DTMF that is not 1 byte, empty audio, lengths over `max_payload`. Reading Asterisk (the
default) the first message must be the UUID and no other may follow it; reading the bridge (a fake
Asterisk) only hangup and audio are legal, as in Asterisk's own reader.

Encoders build the messages for either side; they raise ValueError for what no peer should send.
"""

from __future__ import annotations

import enum
import uuid
from collections.abc import Mapping
from dataclasses import dataclass
from types import MappingProxyType
from typing import Final, TypeAlias

from bridge.audio.formats import AudioFormat, Encoding

HEADER_BYTES: Final = 3
MAX_PAYLOAD: Final = 0xFFFF
DTMF_DIGITS: Final = frozenset(b"0123456789*#ABCD")


class Kind(enum.IntEnum):
    HANGUP = 0x00
    UUID = 0x01
    DTMF = 0x03
    SLIN = 0x10  # 8 kHz; before 22.7 every frame was tagged 0x10 whatever its rate
    SLIN12 = 0x11
    SLIN16 = 0x12
    SLIN24 = 0x13
    SLIN32 = 0x14
    SLIN44 = 0x15
    SLIN48 = 0x16
    SLIN96 = 0x17
    SLIN192 = 0x18
    ERROR = 0xFF


RATE_FOR_AUDIO_TYPE: Final[Mapping[int, int]] = MappingProxyType(
    {
        Kind.SLIN: 8000,
        Kind.SLIN12: 12000,
        Kind.SLIN16: 16000,
        Kind.SLIN24: 24000,
        Kind.SLIN32: 32000,
        Kind.SLIN44: 44100,
        Kind.SLIN48: 48000,
        Kind.SLIN96: 96000,
        Kind.SLIN192: 192000,
    }
)
AUDIO_TYPE_FOR_RATE: Final[Mapping[int, int]] = MappingProxyType(
    {rate: kind for kind, rate in RATE_FOR_AUDIO_TYPE.items()}
)


def audio_type_for_format(fmt: AudioFormat) -> int | None:
    """The AudioSocket type carrying `fmt`, or None: AudioSocket carries signed linear only."""
    return AUDIO_TYPE_FOR_RATE.get(fmt.sample_rate) if fmt.encoding is Encoding.SLIN else None


# --------------------------------------------------------------------------- events


@dataclass(frozen=True, slots=True)
class Uuid:
    uuid: uuid.UUID

    @property
    def text(self) -> str:
        return str(self.uuid)


@dataclass(frozen=True, slots=True)
class Audio:
    kind: int
    sample_rate: int
    payload: bytes


@dataclass(frozen=True, slots=True)
class Dtmf:
    digit: str


@dataclass(frozen=True, slots=True)
class Hangup:
    pass


@dataclass(frozen=True, slots=True)
class PeerError:
    """Type 0xFF (Asterisk never sends it): an optional one-byte application error code."""

    code: int | None


@dataclass(frozen=True, slots=True)
class ProtocolError:
    reason: str


Event: TypeAlias = Uuid | Audio | Dtmf | Hangup | PeerError | ProtocolError


# --------------------------------------------------------------------------- parser


class AudioSocketParser:
    """Incremental parser for one AudioSocket TCP stream."""

    def __init__(self, *, from_asterisk: bool = True, max_payload: int = MAX_PAYLOAD) -> None:
        if not 0 < max_payload <= MAX_PAYLOAD:
            raise ValueError(f"max_payload must be within 1..{MAX_PAYLOAD}")
        self.from_asterisk = from_asterisk
        self.max_payload = max_payload
        self.error: str | None = None  # the fatal protocol error, once there is one
        self._buf = bytearray()
        self._messages = 0
        self._closed = False

    @property
    def closed(self) -> bool:
        """True after a Hangup or a ProtocolError: further input is ignored."""
        return self._closed

    @property
    def buffered(self) -> int:
        """Bytes held while waiting for the rest of a message."""
        return len(self._buf)

    def feed(self, data: bytes) -> list[Event]:
        if self._closed:
            return []
        self._buf += data
        events: list[Event] = []
        pos = 0
        while len(self._buf) - pos >= HEADER_BYTES and not self._closed:
            kind, length = self._buf[pos], int.from_bytes(self._buf[pos + 1 : pos + 3], "big")
            reason = self._check_header(kind, length)
            if reason is not None:
                events.append(self._fail(reason))
                break
            if len(self._buf) - pos - HEADER_BYTES < length:
                break
            payload = bytes(self._buf[pos + HEADER_BYTES : pos + HEADER_BYTES + length])
            pos += HEADER_BYTES + length
            self._messages += 1
            events.append(self._event(kind, payload))
        del self._buf[:pos]
        if self._closed:
            self._buf.clear()
        return events

    def _fail(self, reason: str) -> ProtocolError:
        self._closed, self.error = True, reason
        return ProtocolError(reason)

    def _check_header(self, kind: int, length: int) -> str | None:
        first = self._messages == 0
        if self.from_asterisk and first != (kind == Kind.UUID):
            return "first message is not the UUID" if first else "UUID sent twice"
        allowed = (
            kind in RATE_FOR_AUDIO_TYPE or kind in (Kind.HANGUP, Kind.UUID, Kind.DTMF, Kind.ERROR)
            if self.from_asterisk
            else kind in RATE_FOR_AUDIO_TYPE or kind == Kind.HANGUP
        )
        if not allowed:
            return f"unexpected message type 0x{kind:02x}"
        if length > self.max_payload:
            return f"length {length} over the {self.max_payload}-byte limit"
        if kind == Kind.UUID and length != 16:
            return f"UUID of {length} bytes"
        if kind == Kind.DTMF and length != 1:
            return f"DTMF of {length} bytes"
        if kind in RATE_FOR_AUDIO_TYPE and length == 0:
            return "empty audio message"
        if kind == Kind.ERROR and length > 1:
            return f"error message of {length} bytes"
        return None

    def _event(self, kind: int, payload: bytes) -> Event:
        if kind in RATE_FOR_AUDIO_TYPE:
            return Audio(kind, RATE_FOR_AUDIO_TYPE[kind], payload)
        if kind == Kind.UUID:
            return Uuid(uuid.UUID(bytes=payload))
        if kind == Kind.DTMF:
            if payload[0] not in DTMF_DIGITS:
                return self._fail(f"invalid DTMF byte 0x{payload[0]:02x}")
            return Dtmf(chr(payload[0]))
        if kind == Kind.ERROR:
            return PeerError(payload[0] if payload else None)
        self._closed = True
        return Hangup()


# --------------------------------------------------------------------------- encoders


def encode_message(kind: int, payload: bytes = b"") -> bytes:
    """Any message, unchecked beyond what the framing can carry (for tests that misbehave on purpose)."""
    if not 0 <= kind <= 0xFF or len(payload) > MAX_PAYLOAD:
        raise ValueError("type must be one byte and the payload at most 65535 bytes")
    return bytes((kind,)) + len(payload).to_bytes(2, "big") + payload


def encode_audio(payload: bytes, fmt_type: int = Kind.SLIN) -> bytes:
    if fmt_type not in RATE_FOR_AUDIO_TYPE:
        raise ValueError(f"0x{fmt_type:02x} is not an audio type")
    if not payload:
        raise ValueError("an audio message must carry audio")
    return encode_message(fmt_type, payload)


def encode_hangup() -> bytes:
    return encode_message(Kind.HANGUP)


def encode_uuid(call_id: uuid.UUID | str) -> bytes:
    """The first message Asterisk sends (for a fake Asterisk). A str must be a valid UUID."""
    value = call_id if isinstance(call_id, uuid.UUID) else uuid.UUID(call_id)
    return encode_message(Kind.UUID, value.bytes)


def encode_dtmf(digit: str) -> bytes:
    """A keypress as Asterisk reports it (for a fake Asterisk; the bridge cannot send DTMF)."""
    if len(digit) != 1 or digit.encode("latin-1", "replace")[0] not in DTMF_DIGITS:
        raise ValueError(f"not a DTMF digit: {digit!r}")
    return encode_message(Kind.DTMF, digit.encode("ascii"))


def encode_error(code: int | None = None) -> bytes:
    if code is not None and not 0 <= code <= 0xFF:
        raise ValueError("an error code is one byte")
    return encode_message(Kind.ERROR, b"" if code is None else bytes((code,)))
