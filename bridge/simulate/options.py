"""What one simulated call should do: `SimulatedCallOptions`, and the records it reports while running."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from types import MappingProxyType
from typing import Literal
from urllib.parse import urlsplit

from bridge.audio.formats import AudioFormat, format_by_name
from bridge.simulate.wire import PlainVariant

Transport = Literal["chan_websocket", "audiosocket"]
Direction = Literal["both", "in", "out"]
Control = Literal["json", "plain"]
FormatName = Literal["ulaw", "alaw", "slin", "slin16", "slin24"]
RecordKind = Literal["command", "event", "error", "call"]

MEDIA_PATH = "/api/real-time-voice-stream"
WEBHOOK_PATH = "/api/voip/webhook"
AUDIOSOCKET_TYPES: Mapping[str, int] = MappingProxyType({"slin": 0x10, "slin16": 0x12, "slin24": 0x13})


@dataclass(frozen=True, slots=True)
class PeerRecord:
    """Something the fake Asterisk saw or did, stamped with call time.

    `t` is seconds of call time since the media connection came up (tick 0, when the first caller frame
    is sent); `kind` is "command" (received from the bridge), "event" (sent to the bridge), "error"
    (something Asterisk would punish) or "call" (connected, hangup, closed...). `queue_length` is the
    playout queue depth at that moment (always 0 for AudioSocket, which has no queue).
    """

    t: float
    kind: RecordKind
    name: str
    detail: str = ""
    queue_length: int = 0


@dataclass(frozen=True, slots=True)
class AudioSource:
    """Caller audio: int16 PCM at `sample_rate`, or a WAV file. Neither: a speech-like test signal."""

    pcm: bytes | None = None
    sample_rate: int = 16000
    wav_path: Path | None = None


@dataclass(frozen=True, slots=True)
class SimulatedCallOptions:
    """One call as a PBX plus Asterisk would place it.

    url: the bridge's base HTTP URL (`http://127.0.0.1:8080`); the media socket is derived from it.
    seconds: how long the caller stays on the line, in call time, counted from the first caller frame;
      None means the length of the audio source plus `tail_seconds`. After the source ends the caller
      sends silence frames (a quiet line still carries RTP).
    wait_for_bridge_hangup: the caller never hangs up at `seconds`; it waits for the bridge to hang up
      and counts an error if it has not within `max_seconds`.
    speed: time-compression factor for every clock of the peer (caller pacing and playout ticks);
      1.0 is real time. Only for tests against a fake server: the bridge would see audio too fast.
    dtmf: (call-time seconds, digit) pairs, sent as DTMF_END events (chan_websocket) or 0x03 messages.
    records: if given, every PeerRecord is also put here as it happens (for tests that react live).
    on_record: same, as a synchronous callback.
    hangup_event: set it to make the caller hang up at the next tick (a test reacting to the bridge).
    dtmf_queue: digits put here are pressed at the next tick.
    direction: chan_websocket's media direction as the dial option `d()` sets it (22.9+), from the
      bridge's side: "out" = Asterisk sends no caller audio, "in" = it drops what the bridge sends.
    announce_modes: MEDIA_START also says `passthrough` and `unbuffered` (both false), as Asterisk
      releases after 22.11 do (asterisk/asterisk#2120).
    query: extra `v()` parameters on the media URI (e.g. {"amd": "MACHINE"}).
    """

    url: str = "http://127.0.0.1:8080"
    connector_key: str | None = None
    transport: Transport = "chan_websocket"
    control: Control = "json"
    plain_variant: PlainVariant = "22.10"
    format: FormatName = "slin16"
    call_id: str = field(default_factory=lambda: str(uuid.uuid4()))
    caller: str = "+15551230001"
    called: str = "+34987654321"
    audio: AudioSource = field(default_factory=AudioSource)  # default: synthetic speech, up to 10 s
    seconds: float | None = None
    tail_seconds: float = 2.0
    send_webhook: bool = True
    terminate_webhook: bool = False
    ws_username: str | None = None
    ws_password: str | None = None
    ws_auth: bool = True  # without explicit credentials: Basic `asterisk`:connector_key, as the samples do
    connection_id: str = "bridge_media"
    channel_id: str | None = None
    channel_variables: Mapping[str, str] = field(default_factory=dict)
    direction: Direction = "both"
    announce_modes: bool = False
    query: Mapping[str, str] = field(default_factory=dict)
    audiosocket_host: str = "127.0.0.1"
    audiosocket_port: int = 9092
    audiosocket_send_hangup: bool = False
    wait_for_bridge_hangup: bool = False
    max_seconds: float = 120.0
    connect_timeout: float = 0.5
    expect_audio: bool = True
    dtmf: tuple[tuple[float, str], ...] = ()
    speed: float = 1.0
    records: asyncio.Queue[PeerRecord] | None = None
    on_record: Callable[[PeerRecord], None] | None = None
    hangup_event: asyncio.Event | None = None
    dtmf_queue: asyncio.Queue[str] | None = None

    def __post_init__(self) -> None:
        problems = self.problems()
        if problems:
            raise ValueError("; ".join(problems))

    def problems(self) -> list[str]:
        out: list[str] = []
        if urlsplit(self.url).scheme not in ("http", "https", "ws", "wss") or not urlsplit(self.url).hostname:
            out.append(f"url must look like http://HOST:PORT, got {self.url!r}")
        if format_by_name(self.format) is None or self.format not in (
            "ulaw",
            "alaw",
            "slin",
            "slin16",
            "slin24",
        ):
            out.append(f"unsupported format {self.format!r}")
        if self.transport == "audiosocket":
            if self.format not in AUDIOSOCKET_TYPES:
                out.append("AudioSocket carries signed linear only: use --format slin, slin16 or slin24")
            try:
                uuid.UUID(self.call_id)
            except ValueError:
                out.append(f"AudioSocket needs a UUID call id, got {self.call_id!r}")
        elif self.transport != "chan_websocket":
            out.append(f"unknown transport {self.transport!r}")
        if self.control not in ("json", "plain"):
            out.append(f"control must be json or plain, got {self.control!r}")
        if self.direction not in ("both", "in", "out"):
            out.append(f"direction must be both, in or out, got {self.direction!r}")
        elif self.direction != "both" and self.transport == "audiosocket":
            out.append("AudioSocket has no media direction")
        elif self.direction != "both" and self.control == "plain" and self.plain_variant != "22.10":
            out.append("media direction needs Asterisk 22.9 or later (plain_variant 22.10)")
        if self.plain_variant not in ("22.6", "22.7", "22.10"):
            out.append(f"plain_variant must be 22.6, 22.7 or 22.10, got {self.plain_variant!r}")
        if self.speed <= 0:
            out.append("speed must be positive")
        if self.seconds is not None and self.seconds <= 0:
            out.append("seconds must be positive")
        if (self.ws_username is None) != (self.ws_password is None):
            out.append("give both the WebSocket username and password, or neither")
        for at, digit in self.dtmf:
            if len(digit) != 1 or digit not in "0123456789*#ABCD" or at < 0:
                out.append(f"bad DTMF entry ({at}, {digit!r})")
        return out

    @property
    def media_credentials(self) -> tuple[str, str] | None:
        """The HTTP Basic credentials the upgrade carries (websocket_client.conf username/password)."""
        if self.ws_username is not None and self.ws_password is not None:
            return self.ws_username, self.ws_password
        if self.ws_auth and self.connector_key:
            return "asterisk", self.connector_key
        return None

    @property
    def audio_format(self) -> AudioFormat:
        fmt = format_by_name(self.format)
        assert fmt is not None  # checked in __post_init__
        return fmt

    @property
    def http_base(self) -> str:
        parts = urlsplit(self.url)
        scheme = {"ws": "http", "wss": "https"}.get(parts.scheme, parts.scheme)
        return f"{scheme}://{parts.netloc}{parts.path.rstrip('/')}"

    @property
    def websocket_url(self) -> str:
        """The media socket URL without query (what the webhook's `websocketUrl` carries)."""
        base = self.http_base
        ws = "wss" + base[len("https") :] if base.startswith("https") else "ws" + base[len("http") :]
        return ws + MEDIA_PATH
