"""The `Settings` message for one call: audio formats matched to the leg, and listen/think/speak.

Pure: no I/O. Deepgram takes µ-law, A-law and linear16 at telephony rates both ways, so a G.711 or
slin leg passes through untouched; other rates are resampled to 24 kHz linear16, Deepgram's default.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, Literal

from bridge.audio.formats import SLIN24, AudioFormat, Encoding
from bridge.providers.base import ModelFormats, ToolSpec
from bridge.providers.deepgram.events import history_messages, settings_message
from bridge.settings_agents import DeepgramSettings

# linear16 rates Deepgram's TTS produces (and its STT takes): a slin leg at one of them passes through.
PCM_RATES = frozenset({8000, 16000, 24000, 32000, 48000})
ENCODINGS = {Encoding.ULAW: "mulaw", Encoding.ALAW: "alaw", Encoding.SLIN: "linear16"}


def model_format(leg: AudioFormat) -> AudioFormat:
    """The leg's own format whenever Deepgram takes it (so nothing is transcoded), else slin24."""
    if leg.encoding is not Encoding.SLIN or leg.sample_rate in PCM_RATES:
        return leg
    return SLIN24


def audio_object(fmt: AudioFormat) -> dict[str, Any]:
    return {"encoding": ENCODINGS[fmt.encoding], "sample_rate": fmt.sample_rate}


def speak_model(voice: str, default: str) -> str:
    """The agent's voice when it names a Deepgram voice (aura-*), else the configured default."""
    return voice if voice.startswith("aura") else default


def function_object(tool: ToolSpec) -> dict[str, Any]:
    # No `endpoint`: the function runs client side (the bridge), answered by FunctionCallResponse.
    return {"name": tool.name, "description": tool.description, "parameters": dict(tool.parameters)}


def build_settings(
    settings: DeepgramSettings,
    formats: ModelFormats,
    *,
    prompt: str,
    voice: str,
    language: str,
    tools: Sequence[ToolSpec],
    greeting: str,
    history: Sequence[tuple[Literal["user", "assistant"], str]] = (),
) -> str:
    listen: dict[str, Any] = {"type": "deepgram", "version": "v1", "model": settings.listen_model}
    if language:
        listen["language"] = language
    think: dict[str, Any] = {
        "provider": {"type": settings.think_provider, "model": settings.model},
        "prompt": prompt,
    }
    if tools:
        think["functions"] = [function_object(tool) for tool in tools]
    agent: dict[str, Any] = {
        "listen": {"provider": listen},
        "think": think,
        "speak": {"provider": {"type": "deepgram", "model": speak_model(voice, settings.speak_model)}},
    }
    if greeting:
        agent["greeting"] = greeting
    messages = history_messages(history)
    if messages:
        agent["context"] = {"messages": messages}
    return settings_message(
        audio_in=audio_object(formats.input),
        audio_out={**audio_object(formats.output), "container": "none"},
        agent=agent,
    )
