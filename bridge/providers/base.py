"""What a call session sees of any speech model: formats, audio in, events out, interrupt.

A provider is connected as soon as the media socket attaches (in parallel with
Asterisk's MEDIA_START), then started once the leg's format is known so it can
pick the native formats closest to the leg's and spare the bridge any transcoding.
"""

from __future__ import annotations

import abc
from collections.abc import AsyncIterator, Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Literal, TypeAlias

from bridge.audio.formats import AudioFormat


@dataclass(frozen=True, slots=True)
class ModelFormats:
    """What the model hears (`input`) and speaks (`output`) on this call."""

    input: AudioFormat
    output: AudioFormat


@dataclass(frozen=True, slots=True)
class ToolSpec:
    """A function the model may call, described as a JSON schema."""

    name: str
    description: str
    parameters: Mapping[str, Any]

    def as_json(self) -> dict[str, Any]:
        return {
            "type": "function",
            "name": self.name,
            "description": self.description,
            "parameters": dict(self.parameters),
        }


# -- events a provider emits ------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class AudioOut:
    """Model audio in `ModelFormats.output`, part of response `response_id`."""

    data: bytes
    response_id: str
    received_at: float | None = None  # event-loop time the model's message carrying it was read


@dataclass(frozen=True, slots=True)
class ResponseAudioDone:
    """The model finished speaking response `response_id` (no more audio for it)."""

    response_id: str


@dataclass(frozen=True, slots=True)
class CallerSpeechStarted:
    """The caller started talking (the model's VAD). If the bot is being heard, that is a barge-in."""

    audio_ms: float | None = None


@dataclass(frozen=True, slots=True)
class CallerSpeechStopped:
    audio_ms: float | None = None


@dataclass(frozen=True, slots=True)
class TranscriptLine:
    """A finished line of the conversation; a bot line cut by barge-in holds only what was heard."""

    role: Literal["caller", "bot"]
    text: str
    item_id: str = ""
    truncated: bool = False


@dataclass(frozen=True, slots=True)
class ToolCall:
    """The model calls a function; answer with `Provider.send_tool_result(call_id, ...)`."""

    call_id: str
    name: str
    arguments: str  # JSON text as the model produced it
    response_id: str = ""


@dataclass(frozen=True, slots=True)
class ResponseDone:
    """A model response is over (`status`: completed, cancelled, failed, incomplete)."""

    response_id: str
    status: str = "completed"


@dataclass(frozen=True, slots=True)
class Usage:
    """What one response or one transcription consumed, for the cost ledger."""

    input_text_tokens: int = 0
    input_audio_tokens: int = 0
    input_cached_text_tokens: int = 0
    input_cached_audio_tokens: int = 0
    output_text_tokens: int = 0
    output_audio_tokens: int = 0
    transcription_input_tokens: int = 0
    transcription_output_tokens: int = 0
    transcription_seconds: float = 0.0
    responses: int = 0
    # Time connected to a model billed by the minute, since the provider's last Usage (a provider that
    # bills time emits it as time passes, e.g. at each turn's end, so a crash loses little).
    model_seconds: float = 0.0


@dataclass(frozen=True, slots=True)
class SayFinished:
    """The response that spoke `Provider.say`'s text number `say_id` is over (after its ResponseDone)."""

    say_id: int
    status: str = "completed"  # completed, cancelled (e.g. the caller talked over it), failed, incomplete


@dataclass(frozen=True, slots=True)
class ProviderError:
    code: str
    message: str
    fatal: bool


@dataclass(frozen=True, slots=True)
class HangupRequested:
    """The model asked to end the call (e.g. its end_call tool) after its last words."""

    reason: str = ""


@dataclass(frozen=True, slots=True)
class ModelReconnecting:
    """The model's connection dropped; the provider is reconnecting (the caller hears silence)."""

    attempt: int


@dataclass(frozen=True, slots=True)
class ModelReconnected:
    """The model is back, with the conversation so far replayed."""

    attempts: int
    rotated: bool = False  # a planned rotation before the provider's session limit, not a drop


ProviderEvent: TypeAlias = (
    AudioOut
    | ResponseAudioDone
    | CallerSpeechStarted
    | CallerSpeechStopped
    | TranscriptLine
    | ToolCall
    | ResponseDone
    | SayFinished
    | Usage
    | ProviderError
    | HangupRequested
    | ModelReconnecting
    | ModelReconnected
)


class ProviderUnavailable(Exception):
    """The model could not be reached or refused the session (the call fails with `code`)."""

    def __init__(self, message: str, *, code: str = "provider_unavailable", provider: str = "") -> None:
        super().__init__(message)
        self.code = code
        self.provider = provider  # the configured provider's name, when no Provider could be built


class Provider(abc.ABC):
    """One model session for one call. Methods are called from the call's own task group."""

    name: str = "provider"

    @abc.abstractmethod
    def negotiate(self, leg: AudioFormat) -> ModelFormats:
        """The model-side formats for a leg in `leg` format; equal to `leg` whenever the model can."""

    async def connect(self) -> None:  # noqa: B027  (optional hook: most providers open a socket here)
        """Open the connection (may run before the leg's format is known)."""

    @abc.abstractmethod
    async def start(self, formats: ModelFormats, *, greet: bool = True) -> None:
        """Configure the session for `formats` and let the model speak first if it should (`greet`: False
        when the call has another first line, e.g. a voicemail message)."""

    # Set by the call's runner: called with the `received_at` of the oldest caller frame in a message,
    # right after that message is written to the model (the uplink latency, batching included).
    on_uplink_sent: Callable[[float], None] | None = None

    # Optional: a provider that runs its own VAD over the caller's audio (the echo model does) sets
    # `reports_caller_voice`; it then calls `on_caller_voice`, once the runner has set it, from
    # `send_audio` with webrtcvad's decision for each 20 ms frame that audio completed (True: voiced).
    # The runner's local barge-in counts those instead of running a second VAD over the same audio.
    reports_caller_voice: bool = False
    on_caller_voice: Callable[[Sequence[bool]], None] | None = None
    # Optional, for a provider whose audio is made in-process (the echo model): set by the runner while
    # its downlink lane waits for the next event. Offered an `AudioOut` when nothing the provider queued
    # is still unread, it plays it there and then (True): no wake-up of the lane per 20 ms chunk. False:
    # the lane is busy with an earlier event, so the provider queues this one as usual (order is kept).
    take_audio: Callable[[AudioOut], bool] | None = None

    @abc.abstractmethod
    async def send_audio(self, data: bytes, received_at: float | None = None) -> None:
        """Caller audio in `formats.input`; `received_at`: event-loop time its frame was read from
        Asterisk (None when unknown)."""

    @abc.abstractmethod
    def events(self) -> AsyncIterator[ProviderEvent]:
        """The model's events; the iterator ends when the model side is gone."""

    @abc.abstractmethod
    async def interrupt(self, played_ms: float, *, cancel_response: bool = False) -> None:
        """Barge-in: the caller heard `played_ms` of the current response; cut it there.

        `cancel_response`: the interruption was detected locally, so the model must also be told
        to stop generating (its own VAD already stops it otherwise).
        """

    async def send_dtmf(self, text: str, *, respond: bool) -> None:  # noqa: B027  (optional hook)
        """The caller's keys as conversation input, in the provider's documented form: `text` is what the
        agent's DTMF rules made of them ("DTMF: 4", "DTMF: 1234", a digit map's meaning); `respond`: ask
        the model to answer it."""

    # Whether `say` works: the model can be made to speak a given text (POST /api/calls/{id}/say, the
    # guards' closing line, the voicemail message). A provider that cannot answers 409 say_not_supported.
    speaks_text: bool = False

    async def say(self, text: str, *, interrupt: bool) -> int:
        """Speak `text` word for word: at once if the model is silent, else after its current response
        (the caller's playout is the runner's to cut when `interrupt`: here the model's response is
        cancelled). Returns the id a later `SayFinished` carries."""
        raise NotImplementedError(f"{self.name} cannot speak a given text")

    async def send_tool_result(self, call_id: str, output: str, *, respond: bool = True) -> None:  # noqa: B027
        """The result of a `ToolCall` (JSON text); `respond`: let the model speak about it."""

    @abc.abstractmethod
    async def close(self) -> None:
        """Release the connection; idempotent and quick."""

    def final_usage(self) -> Usage | None:
        """What the model consumed since its last `Usage` event; asked once, after `close()`, when the
        events are no longer read (a model billed by time owes the seconds since its last report)."""
        return None
