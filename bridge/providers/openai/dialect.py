"""The three services that speak the OpenAI Realtime GA protocol, and where they differ.

Pure: no I/O. OpenAI is the reference; Azure OpenAI (v1 surface) differs only in its
auth header and in taking a deployment name as the model; xAI puts `voice` and
`turn_detection` at the session's top level and takes PCM at several rates.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any, Literal
from urllib.parse import urlencode, urlsplit, urlunsplit

from bridge.audio.formats import SLIN24, ULAW, AudioFormat, Encoding, slin_at

DialectName = Literal["openai", "azure_openai", "xai"]

XAI_PCM_RATES = frozenset({8000, 16000, 21050, 24000, 32000, 44100, 48000})


@dataclass(frozen=True, slots=True)
class Dialect:
    name: DialectName
    auth_header: Literal["authorization", "api-key"]
    top_level_voice: bool  # xAI: session.voice / session.turn_detection
    session_type: bool  # GA OpenAI requires session.type = "realtime"
    pcm_rates: frozenset[int]
    semantic_vad: bool
    sends_caller_transcription_config: bool

    def headers(self, api_key: str) -> dict[str, str]:
        if self.auth_header == "api-key":
            return {"api-key": api_key}
        return {"Authorization": f"Bearer {api_key}"}

    def url(self, base: str, model: str) -> str:
        """The WebSocket URL with `model` in the query (keeps any query the operator configured)."""
        parts = urlsplit(base)
        query = f"{parts.query}&" if parts.query else ""
        return urlunsplit(parts._replace(query=query + urlencode({"model": model})))

    def model_format(self, leg: AudioFormat) -> AudioFormat:
        """The format to ask the model for, so that the leg's audio needs the least work.

        G.711 passes through untouched; 8 kHz slin becomes µ-law (a table lookup, no resampler
        latency); PCM at a rate the service takes passes through; anything else is resampled.
        """
        if leg.encoding in (Encoding.ULAW, Encoding.ALAW):
            return leg
        if leg.sample_rate in self.pcm_rates:
            return slin_at(leg.sample_rate)
        if leg.sample_rate == 8000:
            return ULAW
        return SLIN24

    def format_object(self, fmt: AudioFormat) -> dict[str, Any]:
        if fmt.encoding is Encoding.ULAW:
            return {"type": "audio/pcmu"}
        if fmt.encoding is Encoding.ALAW:
            return {"type": "audio/pcma"}
        return {"type": "audio/pcm", "rate": fmt.sample_rate}


OPENAI = Dialect(
    name="openai",
    auth_header="authorization",
    top_level_voice=False,
    session_type=True,
    pcm_rates=frozenset({24000}),
    semantic_vad=True,
    sends_caller_transcription_config=True,
)
AZURE_OPENAI = dataclasses.replace(OPENAI, name="azure_openai", auth_header="api-key")
XAI = Dialect(
    name="xai",
    auth_header="authorization",
    top_level_voice=True,
    session_type=False,
    pcm_rates=XAI_PCM_RATES,
    semantic_vad=False,
    sends_caller_transcription_config=False,  # xAI transcribes the caller by itself
)
DIALECTS: dict[str, Dialect] = {d.name: d for d in (OPENAI, AZURE_OPENAI, XAI)}
