"""Request and response models of `/api/agents`: an agent's profile in the API's names.

The profile fields are `[companies.agent]`'s own (bridge/settings_agents.py), copied with their limits so
the OpenAPI document states every rule a single field has; the two the platforms name otherwise are
`system_prompt` (instructions) and `starting_message` (greeting). JSON types are not coerced ("30" is
not a number, 1 is not true). What only the whole profile can break (a fallback that is the provider, a key
map without mode "map") is checked afterwards, as a 409.
"""

from __future__ import annotations

from typing import Annotated, Any, Literal, get_args

from pydantic import (
    AfterValidator,
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    StringConstraints,
    WithJsonSchema,
    create_model,
)

from bridge.api.fields import E164, NO_CONTROL_PATTERN
from bridge.settings_agents import BUILTIN_TOOLS, DTMF_KEY_PATTERN, AgentSettings

API_NAMES: dict[str, str] = {"instructions": "system_prompt", "greeting": "starting_message"}
PROFILE_KEYS: dict[str, str] = {API_NAMES.get(name, name): name for name in AgentSettings.model_fields}
_FORBID = ConfigDict(extra="forbid")
_MODEL_PROVIDERS = Literal["openai", "azure_openai", "xai", "gemini", "elevenlabs", "deepgram", "ultravox"]


_FIELD_NAME = r"^[A-Za-z_][A-Za-z0-9_]{0,63}$"


def _json_number(value: object) -> object:
    """Numbers only (17.0 is an integer in JSON), never "17" or true: lax validation would take them."""
    if isinstance(value, str | bool):
        raise ValueError("must be a number")
    return value


Number = BeforeValidator(_json_number)
Flag = Field(strict=True)  # true or false, never "true" or 1


def _not_builtin(value: str) -> str:
    if value in BUILTIN_TOOLS:
        raise ValueError(f"{value!r} is a built-in tool name")
    return value


def _object_schema(value: dict[str, Any]) -> dict[str, Any]:
    if value.get("type") != "object":
        raise ValueError('must be a JSON schema with "type": "object"')
    return value


class ToolIn(BaseModel):
    """An HTTP tool: the model's arguments are POSTed to `url` as JSON."""

    model_config = _FORBID

    name: Annotated[
        str,
        Field(pattern=r"^[A-Za-z0-9_-]{1,64}$"),
        AfterValidator(_not_builtin),
        WithJsonSchema(
            {"type": "string", "pattern": r"^[A-Za-z0-9_-]{1,64}$", "not": {"enum": list(BUILTIN_TOOLS)}}
        ),
    ]
    description: str = Field("", max_length=1000)
    parameters: Annotated[
        dict[str, Any],
        AfterValidator(_object_schema),
        WithJsonSchema(
            {"type": "object", "required": ["type"], "properties": {"type": {"const": "object"}}},
        ),
    ] = Field(default_factory=lambda: {"type": "object", "properties": {}})
    url: str = Field(max_length=2048, pattern=r"^https?://")
    timeout_seconds: Annotated[float, Number] = Field(5.0, gt=0, le=60)
    headers: dict[str, Annotated[str, StringConstraints(max_length=4096)]] = Field(
        default_factory=dict,
        max_length=20,
        description='Values may be "env:NAME" (read from the server\'s environment)',
    )


class DtmfRulesIn(BaseModel):
    """How the caller's keys reach the model."""

    model_config = _FORBID

    mode: Literal["pass_through", "collect", "map"] = "pass_through"
    terminator: str = Field("#", pattern=r"^[0-9*#A-D]?$")
    timeout_ms: Annotated[int, Number] = Field(3000, ge=200, le=60_000)
    max_digits: Annotated[int, Number] = Field(16, ge=1, le=64)
    map: Annotated[
        dict[
            Annotated[str, Field(pattern=DTMF_KEY_PATTERN)],
            Annotated[str, Field(min_length=1, max_length=200)],
        ],
        WithJsonSchema(
            {
                "type": "object",
                "propertyNames": {"pattern": DTMF_KEY_PATTERN},
                "additionalProperties": {"type": "string", "minLength": 1, "maxLength": 200},
                "description": 'mode "map" only: key -> its meaning',
            }
        ),
    ] = Field(default_factory=dict)
    respond: Annotated[bool, Flag] = True
    sensitive: Annotated[bool, Flag] = False


def _unique(value: list[str]) -> list[str]:
    if len(set(value)) != len(value):
        raise ValueError("a provider is listed twice")
    return value


def _silence(value: float) -> float:
    if 0 < value < 2:
        raise ValueError("must be 0 (off) or at least 2")
    return value


_OVERRIDES: dict[str, Any] = {
    "tools": Annotated[list[ToolIn], Field(max_length=20)],
    "dtmf_rules": DtmfRulesIn,
    "fallback_providers": Annotated[
        list[_MODEL_PROVIDERS],
        Field(max_length=7),
        AfterValidator(_unique),
        WithJsonSchema(
            {
                "type": "array",
                "maxItems": 7,
                "uniqueItems": True,
                "items": {"enum": list(get_args(_MODEL_PROVIDERS))},
                "description": "Tried in order when the provider fails (not the provider itself)",
            }
        ),
    ],
    "transfer_targets": Annotated[
        list[Annotated[str, Field(pattern=r"^\+?[0-9*#]{1,32}$")]], Field(max_length=50)
    ],
    "caller_silence_seconds": Annotated[
        float,
        Field(ge=0, le=3600),
        Number,
        AfterValidator(_silence),
        WithJsonSchema({"anyOf": [{"const": 0}, {"type": "number", "minimum": 2, "maximum": 3600}]}),
    ],
    "instructions": Annotated[str, Field(max_length=20_000, description="The model's instructions")],
    "greeting": Annotated[
        str,
        Field(max_length=4000, description="Said as soon as the call connects; empty: wait for the caller"),
    ],
    "analysis_fields": Annotated[
        dict[Annotated[str, Field(pattern=_FIELD_NAME)], Literal["string", "number", "integer", "boolean"]],
        Field(max_length=50),
        WithJsonSchema(
            {
                "type": "object",
                "maxProperties": 50,
                "propertyNames": {"pattern": _FIELD_NAME},
                "additionalProperties": {"enum": ["string", "number", "integer", "boolean"]},
                "description": "The report's structured fields: name -> JSON type",
            }
        ),
    ],
    "voice": Annotated[str, Field(max_length=100)],
    "language": Annotated[str, Field(max_length=35)],
}


def _profile_field(name: str) -> Any:
    if name in _OVERRIDES:
        return _OVERRIDES[name]
    info = AgentSettings.model_fields[name]
    extra: tuple[Any, ...] = ()
    if info.annotation in (int, float):
        extra = (Number,)
    elif info.annotation is bool:
        extra = (Flag,)
    metadata = (*info.metadata, *extra)
    return Annotated[(info.annotation, *metadata)] if metadata else info.annotation


_PROFILE_FIELDS: dict[str, Any] = {
    api: (_profile_field(name) | None, Field(None)) for api, name in PROFILE_KEYS.items()
}
AgentName = Annotated[str, StringConstraints(min_length=1, max_length=200, pattern=NO_CONTROL_PATTERN)]

AgentFields: type[BaseModel] = create_model(
    "AgentFields",
    __config__=_FORBID,
    __doc__="PATCH: what is given changes, the rest stays (null is the same as absent).",
    name=(AgentName | None, Field(None)),
    enabled=(
        Annotated[bool, Flag] | None,
        Field(None, description="A disabled agent takes no new calls (409)"),
    ),
    phones=(
        list[E164] | None,
        Field(
            None,
            max_length=100,
            description="The company's numbers whose inbound calls this agent answers (each on one agent)",
        ),
    ),
    **_PROFILE_FIELDS,
)
AgentCreate: type[BaseModel] = create_model(
    "AgentCreate",
    __base__=AgentFields,
    __doc__="A new agent: anything not given is [companies.agent]'s default.",
    name=(AgentName, ...),
)


class AgentOut(BaseModel):
    id: str = Field(description="`default` is the config's [companies.agent] (read-only)")
    name: str
    enabled: bool
    read_only: bool
    phones: list[str]
    system_prompt: str
    starting_message: str
    voice: str
    language: str
    provider: str
    settings: dict[str, Any] = Field(
        description="The whole profile in the config's names (header values masked)"
    )
    created_at: str | None
    updated_at: str | None


class OneAgent(BaseModel):
    agent: AgentOut


class AgentList(BaseModel):
    agents: list[AgentOut]


class AgentDeleted(BaseModel):
    id: str
    deleted: bool


# A whole `[companies.agent]` under the config's own names (the admin API's company default agent), with
# the same documented constraints as the agents API; absent fields take the config's defaults.
_SETTINGS_FIELDS: dict[str, Any] = {
    name: (_profile_field(name) | None, Field(None)) for name in AgentSettings.model_fields
}
AgentSettingsIn: type[BaseModel] = create_model(
    "AgentSettingsIn",
    __config__=_FORBID,
    __doc__="The company's default agent, as [companies.agent] takes it (null is the same as absent).",
    **_SETTINGS_FIELDS,
)
