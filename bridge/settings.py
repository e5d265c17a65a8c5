"""Settings: one TOML file plus `BRIDGE_<SECTION>__<KEY>` environment overrides.

Built once in `cli.py` and passed down; nothing imports a global instance.
Secrets may be written `env:NAME`; they are read from the environment while
validating and kept as `SecretStr`, so a settings repr never shows them. An
unset variable is an error only where the secret is used (`missing_secrets`).
"""

from __future__ import annotations

import tomllib
from collections.abc import Mapping
from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import (
    AfterValidator,
    BeforeValidator,
    Field,
    SecretStr,
    ValidationError,
    model_validator,
)
from pydantic_settings import BaseSettings, PydanticBaseSettingsSource, SettingsConfigDict

from bridge.integrations import keymap
from bridge.keys import digest_of, is_e164
from bridge.settings_agents import (
    AgentSettings,
    ProvidersSettings,
    Secret,
    Section,
    UnresolvedSecret,
)
from bridge.settings_agents import resolve_env_reference as _resolve_env_reference
from bridge.settings_checks import cross_check, missing_secrets, used_providers, warnings_for

__all__ = [
    "AgentSettings",
    "ConfigError",
    "ProvidersSettings",
    "Settings",
    "build_settings",
    "cross_check",
    "load_settings",
    "missing_secrets",
    "used_providers",
    "warnings_for",
]


def _check_configured_key(value: SecretStr) -> SecretStr:
    if isinstance(value, UnresolvedSecret):  # API keys are always used
        raise ValueError(f"environment variable {value.variable} is not set")
    raw = value.get_secret_value()
    if not raw:
        raise ValueError("an API key must not be empty")
    digest_of(raw)  # raises for a malformed sha256: value
    return value


def _e164(value: str) -> str:
    if not is_e164(value):
        raise ValueError(f"{value!r} is not an E.164 number like +34987654321")
    return value


ConfiguredKey = Annotated[
    SecretStr, BeforeValidator(_resolve_env_reference), AfterValidator(_check_configured_key)
]
E164Phone = Annotated[str, AfterValidator(_e164)]


class ServerSettings(Section):
    host: str = "127.0.0.1"
    port: int = Field(8080, ge=0, le=65535)
    max_calls: int = Field(200, ge=1)
    drain_seconds: float = Field(30.0, ge=0)
    pending_ttl_seconds: float = Field(60.0, gt=0)
    max_body_bytes: int = Field(64 * 1024, ge=1024)
    # A client must finish sending a request's headers (and then its body) within these: a slow or
    # stalled client cannot hold a connection open (slowloris).
    header_timeout_seconds: float = Field(10.0, gt=0, le=300)
    body_timeout_seconds: float = Field(30.0, gt=0, le=3600)


class ConnectorSettings(Section):
    api_keys: list[ConfiguredKey] = Field(default_factory=list)
    # true: a media socket for a call announced by a `connect` webhook may attach without connector
    # credentials (for PBXs that cannot send them); the call id is then the only proof.
    allow_unauthenticated_media: bool = False


class AdminSettings(Section):
    # The operator's keys for /api/admin/... (hashed like the others); a company key never works there.
    api_keys: list[ConfiguredKey] = Field(default_factory=list)


class AudioSocketSettings(Section):
    enabled: bool = True
    host: str = "127.0.0.1"
    port: int = Field(9092, ge=0, le=65535)
    # AudioSocket carries no numbers: a call with no `connect` webhook before it goes to this company
    # (empty: such calls are refused).
    webhookless_company: str = ""


class StorageSettings(Section):
    url: str = "sqlite:///var/bridge.db"
    # A live call's record is saved this often (and at every state change): a crash loses at most this.
    checkpoint_seconds: float = Field(5.0, gt=0, le=300)
    recordings_dir: str = "var/recordings"  # stereo WAVs of calls whose agent has `recording = true`
    recording_retention_days: int = Field(30, ge=1, le=3650)


class ClusterSettings(Section):
    """A fleet of bridges sharing a Redis (registry and bus); absent: one process, embedded registry."""

    redis_url: str = Field(pattern=r"^(redis|rediss|unix)://")
    # This process's name in the fleet; `bridge serve --workers N` appends "-<n>" for each worker.
    node_id: str = Field(pattern=r"^[A-Za-z0-9._-]{1,64}$")
    max_calls: int = Field(0, ge=0)  # fleet-wide cap; 0: none beyond each node's [server] max_calls
    heartbeat_seconds: float = Field(2.0, gt=0, le=60)
    node_ttl_seconds: float = Field(10.0, gt=0, le=600)  # silent this long: lost, its calls node_lost
    control_timeout_seconds: float = Field(3.0, gt=0, le=30)  # a control request routed to a call's owner

    @model_validator(mode="after")
    def _ttl_covers_beats(self) -> ClusterSettings:
        if self.node_ttl_seconds < 2 * self.heartbeat_seconds:
            raise ValueError("node_ttl_seconds must be at least twice heartbeat_seconds")
        return self


class AnalysisSettings(Section):
    """The post-call report's text model: an OpenAI-compatible chat completions endpoint."""

    url: str = Field("https://api.openai.com/v1/chat/completions", pattern=r"^https?://")
    api_key: Secret = SecretStr("")
    model: str = "gpt-4o-mini"
    timeout_seconds: float = Field(30.0, gt=0, le=300)


class TaskSettings(Section):
    """The scheduler of tasks (scheduled outbound calls)."""

    poll_seconds: float = Field(0.5, gt=0, le=60)  # how often due tasks are looked for
    max_concurrent_per_company: int = Field(5, ge=1, le=10_000)
    # Task calls never hold more than this share of [server] max_calls, so inbound calls find room.
    max_share_of_calls: float = Field(0.5, gt=0, le=1)


class AmiSettings(Section):
    host: str = "127.0.0.1"
    port: int = Field(5038, ge=1, le=65535)
    username: str = "bridge"
    secret: Secret = SecretStr("")


class AriSettings(Section):
    url: str = "http://127.0.0.1:8088"
    username: str = "bridge"
    password: Secret = SecretStr("")
    app: str = "bridge"
    # ARI mode keeps the callee in Stasis and joins our media socket through externalMedia:
    # the websocket_client.conf connection it dials, and the format it asks for.
    media_connection: str = "bridge_media"
    media_format: str = "ulaw"
    # The media leg externalMedia creates: chan_websocket (the connection above) or AudioSocket to
    # [audiosocket] host:port (slin16; Asterisk 22.7+ for wideband).
    media_transport: Literal["websocket", "audiosocket"] = "websocket"
    # Where a caller that entered Stasis(<app>,inbound,...) goes when the bridge refuses it or its media
    # leg fails (extension s).
    failover_context: str = "human-operator"
    # Where an answered outbound callee runs AMD() when the call asks for it (extension s).
    amd_context: str = "bridge-amd"


class OriginateSettings(Section):
    endpoint: str = "PJSIP/{to}@trunk"
    context: str = "bridge-outbound"
    exten: str = "s"
    timeout_seconds: float = Field(30.0, gt=0)


class AsteriskSettings(Section):
    control: Literal["ami", "ari"] = "ami"
    # Where a transferred caller goes; the extension is the target (E.164 keeps its "+": the sample
    # context sends only "+" numbers to the trunk and the rest to local extensions).
    transfer_context: str = "bridge-transfer"
    ami: AmiSettings = AmiSettings()
    ari: AriSettings = AriSettings()
    originate: OriginateSettings = OriginateSettings()


class LoggingSettings(Section):
    level: Literal["debug", "info", "warning", "error"] = "info"
    format: Literal["auto", "json", "console"] = "auto"


class WhatsAppNumber(Section):
    phone_number_id: str
    display_phone_number: str
    verified_name: str = ""
    is_active: bool = True
    verification_status: str = "verified"


WebhookEvent = Literal["call_started", "call_completed", "call_failed", "balance_low"]
DEFAULT_WEBHOOK_EVENTS: tuple[WebhookEvent, ...] = ("call_started", "call_completed", "call_failed")


def _known_key_map(key_map: dict[str, str]) -> dict[str, str]:
    unknown = keymap.unknown_names(key_map)
    if unknown:
        listed = ", ".join("{{" + name + "}}" for name in unknown)
        raise ValueError(f"unknown placeholder(s) {listed}: use {{{{call.<field>}}}} of the call result")
    return key_map


KeyMap = Annotated[dict[str, str], AfterValidator(_known_key_map)]


class WebhookSettings(Section):
    """Where a company's webhook events go (POST JSON, signed with `secret`; README shows the check)."""

    url: str = Field("", pattern=r"^(https?://[!-~]+)?$")  # "": no webhooks
    secret: Secret = SecretStr("")  # HMAC-SHA256 key of X-Bridge-Signature
    events: list[WebhookEvent] = Field(default_factory=lambda: list(DEFAULT_WEBHOOK_EVENTS))
    # The post-call push's `mapped`: CRM field -> "{{call.x}}" template (bridge/integrations/keymap.py).
    key_map: KeyMap = Field(default_factory=dict)


class WebhookDeliverySettings(Section):
    """How webhook deliveries are sent and retried (every company's alike)."""

    timeout_seconds: float = Field(10.0, gt=0, le=120)
    retry_base_seconds: float = Field(10.0, gt=0, le=3600)  # doubled per failed attempt, with jitter
    retry_max_seconds: float = Field(3600.0, gt=0, le=86_400)
    retry_for_seconds: float = Field(86_400.0, gt=0, le=30 * 86_400)  # then the delivery is dead
    poll_seconds: float = Field(1.0, gt=0, le=60)


class CompanyWhatsAppSettings(Section):
    # Meta Graph API token for this company's whatsapp_numbers (`env:NAME`); empty: template sends
    # answer 503 whatsapp_not_configured (check-config warns, it does not refuse to start).
    access_token: Secret = SecretStr("")


class WhatsAppSettings(Section):
    """Meta's Graph API, for POST /api/whatsapp/template (tests point graph_url at a fake)."""

    graph_url: str = Field("https://graph.facebook.com", pattern=r"^https?://[^\s/]+(/\S*)?$")
    graph_version: str = Field("v21.0", pattern=r"^v[0-9]{1,3}\.[0-9]{1,3}$")
    timeout_seconds: float = Field(10.0, gt=0, le=120)  # then 503 whatsapp_unavailable


class RateLimitSettings(Section):
    """Request rates other than a company key's (`[companies.limits] requests_per_minute`), per minute."""

    failed_auths_per_address: int = Field(30, ge=1)  # 401s per client address; then 429 before any key check
    admin_requests_per_minute: int = Field(1000, ge=1)  # per admin key
    connector_requests_per_minute: int = Field(6000, ge=1)  # per connector key (the PBX's webhooks)
    public_requests_per_minute: int = Field(1200, ge=1)  # per client address, on routes that take no key


class LimitsSettings(Section):
    """A company's limits: request rate per API key, live calls, and prepaid credit."""

    requests_per_minute: int = Field(1000, ge=1)  # per API key of the company; 429 past it
    max_live_calls: int = Field(0, ge=0)  # 0: only the server's max_calls applies
    # Prepaid: calls are refused with 402 insufficient_balance once the ledger's sum is <= 0.
    prepaid: bool = False
    low_balance_usd: float = Field(5.0, ge=0)  # crossing it downward emits a balance_low webhook event


class CompanySettings(Section):
    id: str = Field(min_length=1, pattern=r"^[A-Za-z0-9_.-]+$")
    name: str = ""
    api_keys: list[ConfiguredKey] = Field(default_factory=list)
    phones: list[E164Phone] = Field(default_factory=list)
    emails: list[str] = Field(default_factory=list)
    allowed_callers: list[E164Phone] = Field(default_factory=list)
    whatsapp_numbers: list[WhatsAppNumber] = Field(default_factory=list)
    agent: AgentSettings = AgentSettings()
    webhooks: WebhookSettings = WebhookSettings()
    limits: LimitsSettings = LimitsSettings()
    whatsapp: CompanyWhatsAppSettings = CompanyWhatsAppSettings()


class Settings(BaseSettings):
    """The whole configuration. Environment wins over the file, the file over defaults."""

    model_config = SettingsConfigDict(
        env_prefix="BRIDGE_",
        env_nested_delimiter="__",
        extra="forbid",
        frozen=True,
    )

    server: ServerSettings = ServerSettings()
    connector: ConnectorSettings = ConnectorSettings()
    admin: AdminSettings = AdminSettings()
    audiosocket: AudioSocketSettings = AudioSocketSettings()
    storage: StorageSettings = StorageSettings()
    cluster: ClusterSettings | None = None
    asterisk: AsteriskSettings = AsteriskSettings()
    providers: ProvidersSettings = ProvidersSettings()
    analysis: AnalysisSettings = AnalysisSettings()
    webhook_delivery: WebhookDeliverySettings = WebhookDeliverySettings()
    tasks: TaskSettings = TaskSettings()
    logging: LoggingSettings = LoggingSettings()
    rate_limits: RateLimitSettings = RateLimitSettings()
    whatsapp: WhatsAppSettings = WhatsAppSettings()
    companies: list[CompanySettings] = Field(default_factory=list)

    @classmethod
    def settings_customise_sources(
        cls,
        settings_cls: type[BaseSettings],
        init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource,
        dotenv_settings: PydanticBaseSettingsSource,
        file_secret_settings: PydanticBaseSettingsSource,
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        # The file's contents arrive as init kwargs; the environment overrides them.
        return (env_settings, init_settings)


class ConfigError(Exception):
    """Every problem found in a configuration, each as `key.path: message`."""

    def __init__(self, problems: list[str]) -> None:
        super().__init__("\n".join(problems))
        self.problems = problems


def _location(loc: tuple[int | str, ...]) -> str:
    path = ""
    for part in loc:
        path += f"[{part}]" if isinstance(part, int) else (f".{part}" if path else str(part))
    return path or "(top level)"


def _format_validation_error(error: ValidationError) -> list[str]:
    problems = []
    for item in error.errors(include_url=False, include_input=False):
        message = str(item["msg"]).removeprefix("Value error, ")
        problems.append(f"{_location(tuple(item['loc']))}: {message}")
    return problems


def read_toml(path: Path) -> dict[str, Any]:
    try:
        with path.open("rb") as handle:
            return tomllib.load(handle)
    except FileNotFoundError as exc:
        raise ConfigError([f"{path}: no such file"]) from exc
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError([f"{path}: not valid TOML: {exc}"]) from exc
    except OSError as exc:
        raise ConfigError([f"{path}: cannot read: {exc.strerror}"]) from exc


def build_settings(raw: Mapping[str, Any]) -> Settings:
    """Validate `raw` (plus the environment); raise ConfigError listing every problem."""
    try:
        settings = Settings(**raw)
    except ValidationError as exc:
        raise ConfigError(_format_validation_error(exc) + cross_check(raw)) from exc
    # Checked on the validated values too, so keys and phones set through the environment count.
    problems = cross_check(settings.model_dump()) + missing_secrets(settings)
    if problems:
        raise ConfigError(problems)
    return settings


def load_settings(path: Path) -> Settings:
    return build_settings(read_toml(path))
