"""Gemini Live's `setup` message and audio formats, from the call's brief.

Pure: no I/O. The setup is the first frame on every connection (and again, with the session's
resumption handle, on every reconnect); the server answers `setupComplete`.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from bridge.audio.formats import SLIN16, SLIN24, AudioFormat, Encoding, slin_at
from bridge.providers.base import ToolSpec
from bridge.providers.brief import AgentBrief

# Rates sent as they are, declared in the MIME type (`audio/pcm;rate=8000`): the service resamples
# whatever rate it is told (docs, "Live API guide"), so an 8 kHz leg spares the bridge a resampler
# (and its delay) and the uplink half the bytes; 16 kHz is the documented native rate.
INPUT_RATES = frozenset({8000, 16000, 24000})
OUTPUT = SLIN24  # the model always speaks 24 kHz s16le

# The prebuilt voices of the Live native-audio models (docs, "Speech generation: voice options").
VOICES = frozenset(
    {
        "Zephyr", "Puck", "Charon", "Kore", "Fenrir", "Leda", "Orus", "Aoede", "Callirrhoe", "Autonoe",
        "Enceladus", "Iapetus", "Umbriel", "Algieba", "Despina", "Erinome", "Algenib", "Rasalgethi",
        "Laomedeia", "Achernar", "Alnilam", "Schedar", "Gacrux", "Pulcherrima", "Achird",
        "Zubenelgenubi", "Vindemiatrix", "Sadachbia", "Sadaltager", "Sulafat",
    }
)  # fmt: skip
_VOICES_LOWER = {v.lower(): v for v in VOICES}


def voice_name(agent_voice: str, default: str) -> str:
    """The agent's voice when it names a Gemini voice (any case), else the configured default (the
    agent's voice is usually an OpenAI one such as "marin", which Gemini does not have)."""
    return _VOICES_LOWER.get(agent_voice.strip().lower(), default)


def input_format(leg: AudioFormat) -> AudioFormat:
    """PCM at the leg's rate when the service takes it as declared (G.711 is decoded: Gemini takes no
    G.711), else 16 kHz."""
    if leg.sample_rate in INPUT_RATES:
        return slin_at(leg.sample_rate) if leg.encoding is not Encoding.SLIN else leg
    return SLIN16


def mime_type(fmt: AudioFormat) -> str:
    return f"audio/pcm;rate={fmt.sample_rate}"


def function_declarations(tools: Sequence[ToolSpec]) -> list[dict[str, Any]]:
    """Our tools' JSON Schemas go in `parametersJsonSchema` (`parameters` is Gemini's own Schema)."""
    declarations = []
    for tool in tools:
        declaration: dict[str, Any] = {"name": tool.name, "description": tool.description}
        if tool.parameters:
            declaration["parametersJsonSchema"] = dict(tool.parameters)
        declarations.append(declaration)
    return declarations


def activity_detection(brief: AgentBrief) -> dict[str, Any]:
    """The service's VAD from the agent's: silence and padding carry over; the threshold maps onto the
    two start sensitivities (a high threshold = low sensitivity), the middle leaves the default."""
    detection: dict[str, Any] = {
        "disabled": False,
        "silenceDurationMs": brief.silence_duration_ms,
        "prefixPaddingMs": brief.prefix_padding_ms,
    }
    if brief.vad_threshold >= 0.7:
        detection["startOfSpeechSensitivity"] = "START_SENSITIVITY_LOW"
    elif brief.vad_threshold <= 0.3:
        detection["startOfSpeechSensitivity"] = "START_SENSITIVITY_HIGH"
    return detection


def setup_message(
    *, model: str, instructions: str, voice: str, brief: AgentBrief, handle: str | None
) -> dict[str, Any]:
    """The `setup` frame; `handle`: resume that session (the server keeps its context)."""
    setup: dict[str, Any] = {
        "model": model if model.startswith(("models/", "projects/")) else f"models/{model}",
        "generationConfig": {
            "responseModalities": ["AUDIO"],
            "speechConfig": {"voiceConfig": {"prebuiltVoiceConfig": {"voiceName": voice}}},
        },
    }
    if instructions:
        setup["systemInstruction"] = {"parts": [{"text": instructions}]}
    declarations = function_declarations(brief.tools)
    if declarations:
        setup["tools"] = [{"functionDeclarations": declarations}]
    setup["realtimeInputConfig"] = {
        "automaticActivityDetection": activity_detection(brief),
        "activityHandling": "START_OF_ACTIVITY_INTERRUPTS",  # barge-in
    }
    setup["inputAudioTranscription"] = {}
    setup["outputAudioTranscription"] = {}
    # Without compression an audio session ends at 15 minutes; the sliding window lifts that.
    setup["contextWindowCompression"] = {"slidingWindow": {}}
    setup["sessionResumption"] = {"handle": handle} if handle else {}
    return {"setup": setup}
