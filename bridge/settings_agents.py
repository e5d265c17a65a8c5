"""Settings of the speech models and of each company's voice agent (part of `bridge.settings`)."""

from __future__ import annotations

import os
import re
from typing import Annotated, Any, Literal

from pydantic import (
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    SecretStr,
    field_validator,
    model_validator,
)


class UnresolvedSecret(SecretStr):
    """An `env:NAME` secret whose variable is not set: it keeps the name, and its value is always "".

    Validation keeps it instead of failing, so a section nobody uses needs no variable; `build_settings`
    then reports it wherever the secret is used. Consumers see an empty secret, which they all treat as
    "not configured", so it can never authenticate anything.
    """

    def __init__(self, variable: str) -> None:
        super().__init__("")
        self.variable = variable

    def __eq__(self, other: object) -> bool:
        # Never equal to a plain empty secret: a reload that sets the variable is a change.
        return isinstance(other, UnresolvedSecret) and other.variable == self.variable

    def __hash__(self) -> int:
        return hash((UnresolvedSecret, self.variable))

    def __repr__(self) -> str:
        return f"UnresolvedSecret(env:{self.variable})"


def resolve_env_reference(value: object) -> object:
    """`env:NAME` becomes the variable's value (an UnresolvedSecret when unset); other values pass."""
    if isinstance(value, str) and value.startswith("env:"):
        name = value[4:]
        if not name:
            raise ValueError("env: needs a variable name, e.g. env:OPENAI_API_KEY")
        return os.environ[name] if name in os.environ else UnresolvedSecret(name)
    return value


Secret = Annotated[SecretStr, BeforeValidator(resolve_env_reference)]


class Section(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class ModelPrice(Section):
    """USD per million tokens (transcription may instead be priced per minute)."""

    input_text: float = Field(0.0, ge=0)
    input_audio: float = Field(0.0, ge=0)
    cached_input_text: float = Field(0.0, ge=0)
    cached_input_audio: float = Field(0.0, ge=0)
    output_text: float = Field(0.0, ge=0)
    output_audio: float = Field(0.0, ge=0)
    # USD per minute the model is connected, for services that bill time, not tokens (xAI, ElevenLabs,
    # Deepgram, Ultravox); priced from `Usage.model_seconds`, added to any token price.
    per_minute: float = Field(0.0, ge=0)


class TranscriptionPrice(Section):
    input_tokens: float = Field(0.0, ge=0)  # USD per million
    output_tokens: float = Field(0.0, ge=0)
    per_minute: float = Field(0.0, ge=0)  # for duration-billed transcription models


# Published list prices (USD per million tokens) as of late 2026; override them under
# [providers.<name>.prices."<model>"] when they change. Costs are estimates, never invoices.
_GPT_REALTIME = ModelPrice(
    input_text=4.0,
    input_audio=32.0,
    cached_input_text=0.4,
    cached_input_audio=0.4,
    output_text=16.0,
    output_audio=64.0,
)
_GPT_REALTIME_MINI = ModelPrice(
    input_text=0.6,
    input_audio=10.0,
    cached_input_text=0.06,
    cached_input_audio=0.3,
    output_text=2.4,
    output_audio=20.0,
)
# OpenAI's published list prices (USD per million tokens) for the realtime models and their dated
# snapshots. A model not listed here (e.g. a newer one) gets no cost until its price is configured;
# check-config warns about it.
DEFAULT_PRICES: dict[str, ModelPrice] = {
    "gpt-realtime": _GPT_REALTIME,
    "gpt-realtime-2025-08-28": _GPT_REALTIME,
    "gpt-realtime-mini": _GPT_REALTIME_MINI,
    "gpt-realtime-mini-2025-10-06": _GPT_REALTIME_MINI,
    "gpt-4o-realtime-preview": ModelPrice(
        input_text=5.0,
        input_audio=40.0,
        cached_input_text=2.5,
        cached_input_audio=2.5,
        output_text=20.0,
        output_audio=80.0,
    ),
    "gpt-4o-mini-realtime-preview": ModelPrice(
        input_text=0.6,
        input_audio=10.0,
        cached_input_text=0.3,
        cached_input_audio=0.3,
        output_text=2.4,
        output_audio=20.0,
    ),
}
DEFAULT_TRANSCRIPTION_PRICES: dict[str, TranscriptionPrice] = {
    "gpt-4o-mini-transcribe": TranscriptionPrice(input_tokens=1.25, output_tokens=5.0),
    "gpt-4o-transcribe": TranscriptionPrice(input_tokens=2.5, output_tokens=10.0),
    "whisper-1": TranscriptionPrice(per_minute=0.006),
}


def _websocket_url(value: str) -> str:
    if not re.match(r"^wss?://[^/\s]+", value):
        raise ValueError(f"{value!r} is not a ws:// or wss:// URL")
    return value


class ModelServiceSettings(Section):
    """What every speech-model service has: a key, where it is, which model, and its prices."""

    api_key: Secret = SecretStr("")
    url: str
    model: str
    connect_timeout_seconds: float = Field(10.0, gt=0)
    # A lost connection not back within this long ends the provider's part of the call (failover next).
    reconnect_give_up_seconds: float = Field(5.0, gt=0)
    prices: dict[str, ModelPrice] = Field(default_factory=dict)

    def price(self) -> ModelPrice | None:
        return self.prices.get(self.model)


class RealtimeProviderSettings(ModelServiceSettings):
    """One OpenAI-protocol realtime service (OpenAI, Azure OpenAI, xAI)."""

    model: str  # Azure: the deployment name
    transcription_model: str = "gpt-4o-mini-transcribe"
    # Rotate the model session (replaying the conversation) before the provider's own limit.
    max_session_minutes: float = Field(55.0, gt=0)
    # Caller audio per `input_audio_buffer.append`, a multiple of the 20 ms frame (20: each frame alone).
    # A batch holds its first frame back batch - 20 ms (and the model's VAD ends the caller's turn up to
    # that much later). Measured (python -m bench.model_micro uplink, 50 calls): 20 -> 40 -> 60 -> 100 ms
    # cost about 0.075, 0.048, 0.036, 0.023 % of a core per call. 40 is the knee (most CPU saved per ms
    # held), but its 20 ms hold alone is 4x the 5 ms p99 the bridge may add per direction; so the
    # default does not batch, and a CPU-bound deployment can choose 40.
    uplink_batch_ms: int = Field(20, ge=20, le=200)
    prices: dict[str, ModelPrice] = Field(default_factory=lambda: dict(DEFAULT_PRICES))
    transcription_prices: dict[str, TranscriptionPrice] = Field(
        default_factory=lambda: dict(DEFAULT_TRANSCRIPTION_PRICES)
    )

    _url = field_validator("url")(classmethod(lambda cls, value: _websocket_url(value)))

    @field_validator("uplink_batch_ms")
    @classmethod
    def _whole_frames(cls, value: int) -> int:
        if value % 20:
            raise ValueError(f"{value} is not a multiple of 20 (caller audio comes in 20 ms frames)")
        return value


class OpenAISettings(RealtimeProviderSettings):
    url: str = "wss://api.openai.com/v1/realtime"
    model: str = "gpt-realtime"


class AzureOpenAISettings(RealtimeProviderSettings):
    url: str = "wss://YOUR-RESOURCE.openai.azure.com/openai/v1/realtime"
    model: str = "gpt-realtime"  # the deployment name
    max_session_minutes: float = Field(28.0, gt=0)  # Azure ends sessions at 30 minutes


class XaiSettings(RealtimeProviderSettings):
    url: str = "wss://api.x.ai/v1/realtime"
    model: str = "grok-voice-latest"
    transcription_model: str = ""  # xAI transcribes the caller by itself
    prices: dict[str, ModelPrice] = Field(  # xAI bills the session's time, not tokens
        default_factory=lambda: {"grok-voice-latest": ModelPrice(per_minute=0.05)}
    )


class GeminiSettings(ModelServiceSettings):
    """Gemini Live (BidiGenerateContent); `model` is the Live model id (sent as models/<id>)."""

    url: str = (
        "wss://generativelanguage.googleapis.com/ws/"
        "google.ai.generativelanguage.v1beta.GenerativeService.BidiGenerateContent"
    )
    model: str = "gemini-2.5-flash-native-audio-preview-09-2025"
    # The prebuilt voice when the agent's `voice` is not a Gemini voice name (e.g. OpenAI's "marin").
    voice: str = "Kore"
    prices: dict[str, ModelPrice] = Field(
        default_factory=lambda: {
            "gemini-2.5-flash-native-audio-preview-09-2025": ModelPrice(
                input_text=0.5, input_audio=3.0, output_text=2.0, output_audio=12.0
            )
        }
    )

    _url = field_validator("url")(classmethod(lambda cls, value: _websocket_url(value)))


ElevenLabsOverride = Literal["prompt", "first_message", "language"]
ELEVENLABS_OVERRIDES: tuple[ElevenLabsOverride, ...] = ("prompt", "first_message", "language")


class ElevenLabsSettings(ModelServiceSettings):
    """ElevenLabs Agents (Conversational AI); `model` is the agent id."""

    url: str = "wss://api.elevenlabs.io/v1/convai/conversation"
    model: str = ""
    prices: dict[str, ModelPrice] = Field(default_factory=dict)  # per agent id: ModelPrice(per_minute=...)
    # What the conversation overrides on the agent (each must be allowed in the agent's security settings,
    # or ElevenLabs refuses the conversation): "prompt", "first_message", "language".
    overrides: list[ElevenLabsOverride] = Field(default_factory=lambda: list(ELEVENLABS_OVERRIDES))
    # The client tool the agent defines for the bridge's end_call: ElevenLabs' own system tool is called
    # end_call (it ends the conversation server-side, unseen by the bridge), so ours needs another name.
    end_call_tool: str = Field("bridge_end_call", pattern=r"^[A-Za-z0-9_-]{1,64}$")

    _url = field_validator("url")(classmethod(lambda cls, value: _websocket_url(value)))


class DeepgramSettings(ModelServiceSettings):
    """Deepgram Voice Agent; `model` is the think (LLM) model."""

    url: str = "wss://agent.deepgram.com/v1/agent/converse"
    model: str = "gpt-4o-mini"
    think_provider: str = "open_ai"  # agent.think.provider.type: open_ai, anthropic, google, groq, ...
    listen_model: str = "nova-3"  # agent.listen.provider.model (Deepgram speech-to-text)
    # agent.speak.provider.model when the agent's `voice` is not a Deepgram voice (aura-*).
    speak_model: str = "aura-2-thalia-en"
    # Deepgram ends a session that hears nothing (CLIENT_MESSAGE_TIMEOUT; its docs ask for KeepAlive
    # every 8 s when idle): KeepAlive goes out after this long without any frame sent (a one-way leg).
    keepalive_seconds: float = Field(5.0, gt=0, le=8)
    prices: dict[str, ModelPrice] = Field(
        default_factory=lambda: {"gpt-4o-mini": ModelPrice(per_minute=0.08)}
    )

    _url = field_validator("url")(classmethod(lambda cls, value: _websocket_url(value)))


class UltravoxSettings(ModelServiceSettings):
    """Ultravox; `url` is the REST create-call endpoint (the socket is the call's joinUrl)."""

    url: str = "https://api.ultravox.ai/api/calls"
    model: str = "fixie-ai/ultravox"
    voice: str = ""  # an Ultravox voice name or id; empty: the agent's voice (unless an OpenAI one)
    # How far ahead of playout Ultravox may send agent audio (the bridge buffers it and honours
    # playback_clear_buffer, so a little lead only smooths network jitter).
    client_buffer_ms: int = Field(1000, ge=60, le=60000)
    prices: dict[str, ModelPrice] = Field(
        default_factory=lambda: {"fixie-ai/ultravox": ModelPrice(per_minute=0.05)}
    )

    @field_validator("url")
    @classmethod
    def _http_url(cls, value: str) -> str:
        if not re.match(r"^https?://[^/\s]+", value):
            raise ValueError(f"{value!r} is not an http:// or https:// URL")
        return value


class ProvidersSettings(Section):
    openai: OpenAISettings = OpenAISettings()
    azure_openai: AzureOpenAISettings = AzureOpenAISettings()
    xai: XaiSettings = XaiSettings()
    gemini: GeminiSettings = GeminiSettings()
    elevenlabs: ElevenLabsSettings = ElevenLabsSettings()
    deepgram: DeepgramSettings = DeepgramSettings()
    ultravox: UltravoxSettings = UltravoxSettings()

    def realtime(self, name: str) -> RealtimeProviderSettings:
        section: RealtimeProviderSettings = getattr(self, name)
        return section

    def section(self, name: str) -> ModelServiceSettings:
        """The `[providers.<name>]` section of a model provider (not echo)."""
        section: ModelServiceSettings = getattr(self, name)
        return section


ProviderName = Literal[
    "echo", "openai", "azure_openai", "xai", "gemini", "elevenlabs", "deepgram", "ultravox"
]
REALTIME_PROVIDERS: tuple[str, ...] = ("openai", "azure_openai", "xai")  # the OpenAI protocol family
MODEL_PROVIDERS: tuple[str, ...] = (*REALTIME_PROVIDERS, "gemini", "elevenlabs", "deepgram", "ultravox")


class HttpTool(Section):
    """A company's own function for the model: the arguments are POSTed to `url` as JSON."""

    name: str = Field(pattern=r"^[A-Za-z0-9_-]{1,64}$")
    description: str = ""
    parameters: dict[str, Any] = Field(default_factory=lambda: {"type": "object", "properties": {}})
    url: str = Field(pattern=r"^https?://")
    timeout_seconds: float = Field(5.0, gt=0, le=60)
    headers: dict[str, Secret] = Field(default_factory=dict)  # e.g. Authorization = "env:CRM_TOKEN"

    @field_validator("name")
    @classmethod
    def _not_builtin(cls, value: str) -> str:
        if value in BUILTIN_TOOLS:
            raise ValueError(f"{value!r} is a built-in tool name")
        return value

    @field_validator("parameters")
    @classmethod
    def _object_schema(cls, value: dict[str, Any]) -> dict[str, Any]:
        if value.get("type") != "object":
            raise ValueError('parameters must be a JSON schema with "type": "object"')
        return value


BUILTIN_TOOLS = ("end_call", "transfer_call", "send_dtmf", "report_answering_machine")
DTMF_KEY_PATTERN = r"^[0-9*#A-D]$"
DEFAULT_CLOSING_MESSAGE = "I'm sorry, we have to end the call now. Goodbye."
DEFAULT_SILENCE_PROMPT = "Are you still there?"


class DtmfRulesSettings(Section):
    """How the caller's keys reach the model (`[companies.agent.dtmf_rules]`)."""

    # pass_through: each key at once; collect: until `terminator`, `max_digits` or `timeout_ms` of no key;
    # map: the key's meaning from `map` (keys it does not name pass through).
    mode: Literal["pass_through", "collect", "map"] = "pass_through"
    terminator: str = Field("#", pattern=r"^[0-9*#A-D]?$")  # "" for none
    timeout_ms: int = Field(3000, ge=200, le=60_000)
    max_digits: int = Field(16, ge=1, le=64)
    map: dict[
        Annotated[str, Field(pattern=DTMF_KEY_PATTERN)], Annotated[str, Field(min_length=1, max_length=200)]
    ] = Field(default_factory=dict)
    respond: bool = True  # ask the model to answer each input
    sensitive: bool = False  # card numbers, PINs: keys masked as * in transcripts, records and logs

    @model_validator(mode="after")
    def _map_needs_map_mode(self) -> DtmfRulesSettings:
        if self.mode == "map" and not self.map:
            raise ValueError('mode "map" needs a map, e.g. map = { "1" = "sales", "2" = "support" }')
        if self.map and self.mode != "map":
            raise ValueError(f'a map is only used with mode = "map" (mode is "{self.mode}")')
        return self


class AgentSettings(Section):
    provider: ProviderName = "echo"
    # Tried in order when the provider refuses or fails to connect at call start, or is lost mid-call and
    # not back within its reconnect_give_up_seconds; the next one gets the conversation so far.
    fallback_providers: list[ProviderName] = Field(default_factory=list, max_length=7)
    voice: str = "marin"
    instructions: str = ""
    greeting: str = ""  # said as soon as the call connects; empty: the model waits for the caller
    language: str = "en"
    turn_detection: Literal["server_vad", "semantic_vad"] = "server_vad"
    vad_threshold: float = Field(0.5, ge=0, le=1)
    silence_duration_ms: int = Field(500, ge=100, le=5000)
    prefix_padding_ms: int = Field(300, ge=0, le=2000)
    noise_reduction: Literal["near_field", "far_field", "off"] = "near_field"
    # OpenAI Realtime (GA) options. semantic_vad: how soon the model takes the turn.
    vad_eagerness: Literal["low", "medium", "high", "auto"] = "auto"
    # server_vad: the model speaks up after this much caller silence once its reply has played (0: off).
    idle_timeout_ms: int = Field(0, ge=0, le=600_000)
    # Long calls: "auto" drops old turns when the context is full; "retention_ratio" drops down to that
    # fraction at once (fewer truncations, better cache rates); "disabled" fails the response instead.
    truncation: Literal["auto", "disabled", "retention_ratio"] = "auto"
    retention_ratio: float = Field(0.8, gt=0, le=1)
    truncation_token_limit: int = Field(0, ge=0)  # retention_ratio: conversation tokens allowed (0: model's)
    # Local barge-in (our own VAD on the caller while the bot is heard), on top of the model's.
    local_barge_in: bool = False
    local_barge_in_ms: int = Field(240, ge=60, le=2000)  # debounce: speech this long interrupts
    end_call_tool: bool = True
    dtmf_tool: bool = True
    transfer_targets: list[str] = Field(default_factory=list)  # empty: no transfer_call tool
    tools: list[HttpTool] = Field(default_factory=list)
    dtmf_rules: DtmfRulesSettings = DtmfRulesSettings()
    # Guards (0: off). At max_call_seconds the bot says `closing_message`, then hangs up; a caller silent
    # for caller_silence_seconds (our VAD, while the bot is quiet) hears `silence_prompt`, and after a
    # second such silence the closing message, then the hang-up. Messages take {{variables}}.
    max_call_seconds: int = Field(0, ge=0, le=86_400)
    caller_silence_seconds: float = Field(0, ge=0, le=3600)
    closing_message: str = Field(DEFAULT_CLOSING_MESSAGE, max_length=2000)
    silence_prompt: str = Field(DEFAULT_SILENCE_PROMPT, max_length=2000)
    # Outbound answering-machine detection (Asterisk AMD() in the dialplan); on "machine" the bot leaves
    # `voicemail_message` after the beep and hangs up, or hangs up at once when it is empty.
    amd: bool = False
    recording: bool = False  # a stereo WAV of each call (caller left, bot right) in recordings_dir
    # Post-call report: this prompt runs once over the transcript on [analysis]'s text model ("" : no
    # model call; the report is the transcript and the outcome). `analysis_fields` declares the structured
    # fields it must return, name -> JSON schema type ("string", "number", "integer", "boolean").
    analysis_prompt: str = Field("", max_length=8000)
    analysis_fields: dict[
        Annotated[str, Field(pattern=r"^[A-Za-z_][A-Za-z0-9_]{0,63}$")],
        Literal["string", "number", "integer", "boolean"],
    ] = Field(default_factory=dict, max_length=50)
    voicemail_message: str = Field("", max_length=4000)

    @model_validator(mode="after")
    def _fallbacks_are_other_models(self) -> AgentSettings:
        seen = {self.provider}
        for name in self.fallback_providers:
            if name == "echo":
                raise ValueError("fallback_providers: echo is a wiring test, not a fallback for a caller")
            if name in seen:
                raise ValueError(f"fallback_providers: {name!r} is already the provider or listed before")
            seen.add(name)
        return self

    @field_validator("caller_silence_seconds")
    @classmethod
    def _silence_long_enough(cls, value: float) -> float:
        if 0 < value < 2:
            raise ValueError("caller_silence_seconds must be 0 (off) or at least 2")
        return value

    @field_validator("transfer_targets")
    @classmethod
    def _dialable(cls, value: list[str]) -> list[str]:
        for target in value:
            if not re.fullmatch(r"\+?[0-9*#]{1,32}", target):
                raise ValueError(f"{target!r} is not a number or extension")
        return value
