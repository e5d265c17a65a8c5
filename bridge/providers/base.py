"""What a call session sees of any speech model: formats, audio in, events out, interrupt.

A provider is connected as soon as the media socket attaches (in parallel with
Asterisk's MEDIA_START), then started once the leg's format is known so it can
pick the native formats closest to the leg's and spare the bridge any transcoding.
"""

from __future__ import annotations

import abc
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from typing import Literal, TypeAlias

from bridge.audio.formats import AudioFormat


@dataclass(frozen=True, slots=True)
class ModelFormats:
    """What the model hears (`input`) and speaks (`output`) on this call."""

    input: AudioFormat
    output: AudioFormat


# -- events a provider emits ------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class AudioOut:
    """Model audio in `ModelFormats.output`, part of response `response_id`."""

    data: bytes
    response_id: str


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
    role: Literal["caller", "bot"]
    text: str
    item_id: str = ""


@dataclass(frozen=True, slots=True)
class ToolCall:
    call_id: str
    name: str
    arguments: str  # JSON text as the model produced it


@dataclass(frozen=True, slots=True)
class Usage:
    """Token counts of one response (or one transcription)."""

    counts: dict[str, int] = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class ProviderError:
    code: str
    message: str
    fatal: bool


@dataclass(frozen=True, slots=True)
class HangupRequested:
    """The model asked to end the call (e.g. its end_call tool) after its last words."""

    reason: str = ""


ProviderEvent: TypeAlias = (
    AudioOut
    | ResponseAudioDone
    | CallerSpeechStarted
    | CallerSpeechStopped
    | TranscriptLine
    | ToolCall
    | Usage
    | ProviderError
    | HangupRequested
)


class ProviderUnavailable(Exception):
    """The model could not be reached or refused the session (the call fails with `code`)."""

    def __init__(self, message: str, *, code: str = "provider_unavailable") -> None:
        super().__init__(message)
        self.code = code


class Provider(abc.ABC):
    """One model session for one call. Methods are called from the call's own task group."""

    name: str = "provider"

    @abc.abstractmethod
    def negotiate(self, leg: AudioFormat) -> ModelFormats:
        """The model-side formats for a leg in `leg` format; equal to `leg` whenever the model can."""

    async def connect(self) -> None:  # noqa: B027  (optional hook: most providers open a socket here)
        """Open the connection (may run before the leg's format is known)."""

    @abc.abstractmethod
    async def start(self, formats: ModelFormats) -> None:
        """Configure the session for `formats` and let the model speak first if it should."""

    @abc.abstractmethod
    async def send_audio(self, data: bytes) -> None:
        """Caller audio in `formats.input`."""

    @abc.abstractmethod
    def events(self) -> AsyncIterator[ProviderEvent]:
        """The model's events; the iterator ends when the model side is gone."""

    @abc.abstractmethod
    async def interrupt(self, played_ms: float) -> None:
        """Barge-in: the caller heard `played_ms` of the current response; cut it there."""

    async def send_dtmf(self, digit: str) -> None:  # noqa: B027  (optional: not every model takes keys)
        """A key the caller pressed."""

    @abc.abstractmethod
    async def close(self) -> None:
        """Release the connection; idempotent and quick."""
