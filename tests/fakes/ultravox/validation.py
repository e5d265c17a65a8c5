"""Strict models of what a client sends Ultravox: the create-call body and the socket's data messages.

Written from Ultravox's OpenAPI document (`ultravox.v1.StartCallRequest` and the schemas it names) and
its "Protocol & Data Messages" page. Unknown fields and wrong types are refused, as protobuf JSON
parsing does; the "exactly one of" rules the schema states in prose are checked too.
"""

from __future__ import annotations

import json
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, TypeAdapter, ValidationError, model_validator

DURATION = r"^-?(?:0|[1-9][0-9]{0,11})(?:\.[0-9]{1,9})?s$"
Duration = Annotated[str, Field(pattern=DURATION)]
Location = Literal[
    "PARAMETER_LOCATION_UNSPECIFIED",
    "PARAMETER_LOCATION_QUERY",
    "PARAMETER_LOCATION_PATH",
    "PARAMETER_LOCATION_HEADER",
    "PARAMETER_LOCATION_BODY",
]
Role = Literal[
    "MESSAGE_ROLE_USER", "MESSAGE_ROLE_AGENT", "MESSAGE_ROLE_TOOL_CALL", "MESSAGE_ROLE_TOOL_RESULT"
]
FirstSpeaker = Literal["FIRST_SPEAKER_UNSPECIFIED", "FIRST_SPEAKER_AGENT", "FIRST_SPEAKER_USER"]
Medium = Literal["MESSAGE_MEDIUM_UNSPECIFIED", "MESSAGE_MEDIUM_VOICE", "MESSAGE_MEDIUM_TEXT"]


class Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True)


def _exactly_one(model: BaseModel, names: tuple[str, ...], what: str, *, at_most: bool = False) -> None:
    count = sum(getattr(model, n) is not None for n in names)
    if count > 1 or (count == 0 and not at_most):
        raise ValueError(f"{what}: {'at most' if at_most else 'exactly'} one of {', '.join(names)}")


class DynamicParameter(Strict):
    name: str
    location: Location
    schema_: dict[str, Any] = Field(alias="schema")
    required: bool | None = None


class StaticParameter(Strict):
    name: str
    location: Location
    value: Any = None


class BaseToolDefinition(Strict):
    modelToolName: Annotated[str, Field(pattern=r"^[a-zA-Z0-9_-]{1,64}$")]
    description: str | None = None
    dynamicParameters: list[DynamicParameter] | None = None
    staticParameters: list[StaticParameter] | None = None
    automaticParameters: list[dict[str, Any]] | None = None
    requirements: dict[str, Any] | None = None
    timeout: Duration | None = None
    precomputable: bool | None = None
    http: dict[str, Any] | None = None
    client: dict[str, Any] | None = None
    dataConnection: dict[str, Any] | None = None
    defaultReaction: (
        Literal[
            "AGENT_REACTION_UNSPECIFIED",
            "AGENT_REACTION_SPEAKS",
            "AGENT_REACTION_LISTENS",
            "AGENT_REACTION_SPEAKS_ONCE",
        ]
        | None
    ) = None
    staticResponse: dict[str, Any] | None = None

    @model_validator(mode="after")
    def _one_implementation(self) -> BaseToolDefinition:
        _exactly_one(self, ("http", "client", "dataConnection"), "temporaryTool implementation")
        if self.client is not None and self.client:
            raise ValueError("client tool details take no fields")
        if self.client is not None:
            for param in self.dynamicParameters or ():
                if param.location != "PARAMETER_LOCATION_BODY":
                    raise ValueError("only body parameters are allowed for client tools")
        return self


class SelectedTool(Strict):
    toolId: str | None = None
    toolName: str | None = None
    temporaryTool: BaseToolDefinition | None = None
    nameOverride: str | None = None
    descriptionOverride: str | None = None
    authTokens: dict[str, str] | None = None
    parameterOverrides: dict[str, Any] | None = None

    @model_validator(mode="after")
    def _one_tool(self) -> SelectedTool:
        _exactly_one(self, ("toolId", "toolName", "temporaryTool"), "selectedTools item")
        return self


class WebSocketMedium(Strict):
    inputSampleRate: Annotated[int, Field(gt=0)]
    outputSampleRate: Annotated[int, Field(gt=0)] | None = None
    clientBufferSizeMs: Annotated[int, Field(ge=0)] | None = None
    dataMessages: dict[str, bool] | None = None


class CallMedium(Strict):
    webRtc: dict[str, Any] | None = None
    twilio: dict[str, Any] | None = None
    serverWebSocket: WebSocketMedium | None = None
    telnyx: dict[str, Any] | None = None
    plivo: dict[str, Any] | None = None
    exotel: dict[str, Any] | None = None
    sip: dict[str, Any] | None = None

    @model_validator(mode="after")
    def _one_medium(self) -> CallMedium:
        names = ("webRtc", "twilio", "serverWebSocket", "telnyx", "plivo", "exotel", "sip")
        _exactly_one(self, names, "medium", at_most=True)
        return self


class FallbackGreeting(Strict):
    delay: Duration | None = None
    text: str | None = None
    prompt: str | None = None


class UserGreeting(Strict):
    fallback: FallbackGreeting | None = None


class AgentGreeting(Strict):
    uninterruptible: bool | None = None
    text: str | None = None
    prompt: str | None = None
    delay: Duration | None = None


class FirstSpeakerSettings(Strict):
    user: UserGreeting | None = None
    agent: AgentGreeting | None = None

    @model_validator(mode="after")
    def _one_speaker(self) -> FirstSpeakerSettings:
        _exactly_one(self, ("user", "agent"), "firstSpeakerSettings")
        return self


class VadSettings(Strict):
    turnEndpointDelay: Duration | None = None
    minimumTurnDuration: Duration | None = None
    minimumInterruptionDuration: Duration | None = None
    frameActivationThreshold: float | None = None


class Message(Strict):
    role: Literal[
        "MESSAGE_ROLE_USER", "MESSAGE_ROLE_AGENT", "MESSAGE_ROLE_TOOL_CALL", "MESSAGE_ROLE_TOOL_RESULT"
    ]
    text: str
    invocationId: str | None = None
    toolName: str | None = None
    medium: Medium | None = None


class TimedMessage(Strict):
    duration: Duration
    message: str
    endBehavior: str | None = None


class StartCallRequest(Strict):
    systemPrompt: str | None = None
    temperature: Annotated[float, Field(ge=0, le=1)] | None = None
    model: str | None = None
    voice: str | None = None
    externalVoice: dict[str, Any] | None = None
    languageHint: Annotated[str, Field(max_length=16)] | None = None
    initialMessages: list[Message] | None = None
    joinTimeout: Duration | None = None
    maxDuration: Duration | None = None
    timeExceededMessage: str | None = None
    inactivityMessages: list[TimedMessage] | None = None
    selectedTools: list[SelectedTool] | None = None
    medium: CallMedium | None = None
    recordingEnabled: bool | None = None
    firstSpeaker: Literal["FIRST_SPEAKER_UNSPECIFIED", "FIRST_SPEAKER_AGENT", "FIRST_SPEAKER_USER"] | None = (
        None
    )
    transcriptOptional: bool | None = None
    initialOutputMedium: Medium | None = None
    vadSettings: VadSettings | None = None
    firstSpeakerSettings: FirstSpeakerSettings | None = None
    experimentalSettings: dict[str, Any] | None = None
    metadata: dict[str, str] | None = None
    initialState: dict[str, Any] | None = None
    dataConnection: dict[str, Any] | None = None

    @model_validator(mode="after")
    def _unique_tools(self) -> StartCallRequest:
        names = [t.temporaryTool.modelToolName for t in self.selectedTools or () if t.temporaryTool]
        if len(names) != len(set(names)):
            raise ValueError("tool model names must be unique")
        if self.voice is not None and self.externalVoice is not None:
            raise ValueError("either voice or externalVoice, not both")
        return self


# -- data messages a client sends over the socket --------------------------------------------------


class Ping(Strict):
    type: Literal["ping"]
    timestamp: float | int


class UserTextMessage(Strict):
    type: Literal["user_text_message"]
    text: str
    urgency: Literal["immediate", "soon", "later"] | None = None


class ForcedAgentMessage(Strict):
    type: Literal["forced_agent_message"]
    content: str | None = None
    toolCalls: list[dict[str, Any]] | None = None
    uninterruptible: bool | None = None
    urgency: Literal["immediate", "soon"] | None = None


class ClientToolResult(Strict):
    type: Literal["client_tool_result"]
    invocationId: str
    result: str | None = None
    responseType: str | None = None
    agentReaction: Literal["speaks", "listens", "speaks-once"] | None = None
    errorType: Literal["undefined", "implementation-error"] | None = None
    errorMessage: str | None = None
    updateCallState: dict[str, Any] | None = None

    @model_validator(mode="after")
    def _result_or_error(self) -> ClientToolResult:
        if (self.result is None) == (self.errorType is None):
            raise ValueError("client_tool_result: exactly one of result, errorType")
        return self


class HangUp(Strict):
    type: Literal["hang_up"]
    message: str | None = None


class SetOutputMedium(Strict):
    type: Literal["set_output_medium"]
    medium: Literal["voice", "text"]


ClientMessage = Annotated[
    Ping | UserTextMessage | ForcedAgentMessage | ClientToolResult | HangUp | SetOutputMedium,
    Field(discriminator="type"),
]
CLIENT_MESSAGES = (
    "ping",
    "user_text_message",
    "forced_agent_message",
    "client_tool_result",
    "hang_up",
    "set_output_medium",
)
_MESSAGE = TypeAdapter[Any](ClientMessage)


class Invalid(Exception):
    """A client message or body the real service would refuse (the text says why)."""


def check_start_call(body: object) -> StartCallRequest:
    if not isinstance(body, dict):
        raise Invalid("the body is not a JSON object")
    try:
        return StartCallRequest.model_validate(body)
    except ValidationError as exc:
        raise Invalid(_errors(exc)) from exc


def parse_client_message(text: str) -> dict[str, Any]:
    """The message as a dict, or Invalid (not JSON, unknown type, unknown field, wrong type)."""
    try:
        data = json.loads(text)
    except ValueError as exc:
        raise Invalid("not JSON") from exc
    if not isinstance(data, dict):
        raise Invalid("not a JSON object")
    try:
        _MESSAGE.validate_python(data)
    except ValidationError as exc:
        raise Invalid(_errors(exc)) from exc
    return data


def _errors(exc: ValidationError) -> str:
    return "; ".join(f"{'.'.join(str(p) for p in e['loc'])}: {e['msg']}" for e in exc.errors()[:5])
