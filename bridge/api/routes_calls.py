"""A company's calls: dial out, list, look up, read the transcript, end, cancel, transfer, send keys, say.

Every route works on the authenticated company's calls only; another company's call id
answers 404 exactly like an unknown one.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Annotated, Any, Literal

from aiohttp import web
from pydantic import BaseModel, BeforeValidator, ConfigDict, Field, StringConstraints, WithJsonSchema

from bridge.api.appkeys import CALLS, COMPANY, RECORDINGS
from bridge.api.envelope import ok, parse_body, parse_query
from bridge.api.fields import E164, NO_CONTROL_PATTERN, Instant, ResourceId
from bridge.api.openapi import Operation, register
from bridge.errors import BadRequest, Forbidden
from bridge.session.admission import valid_call_id
from bridge.session.calls import CallQuery, OutboundCall

MAX_PAGE = 100
TARGET_PATTERN = r"^\+?[0-9*#]{1,32}$"  # E.164 or an extension
Status = Literal["pending", "dialing", "connecting", "active", "ended", "failed"]
Direction = Literal["inbound", "outbound"]
AmdResult = Literal["human", "machine", "unknown"]
Guard = Literal["max_call_seconds", "caller_silence"]


# -- requests ------------------------------------------------------------------------------------


def _json_number(value: object) -> object:
    """Numbers only: lax validation would also take "30" or true."""
    if isinstance(value, str | bool):
        raise ValueError("must be a number")
    return value


RingSeconds = Annotated[int, Field(ge=5, le=120), BeforeValidator(_json_number)]
VariableName = Annotated[str, StringConstraints(min_length=1, max_length=64, pattern=NO_CONTROL_PATTERN)]
VariableValue = Annotated[str, StringConstraints(max_length=1000)]


class OutboundRequest(BaseModel):
    model_config = ConfigDict(extra="forbid", populate_by_name=True)

    from_number: E164 = Field(alias="from", description="One of the company's phones")
    to: E164
    call_objective: str = Field(min_length=1, max_length=4000)
    first_message: str = Field("", max_length=2000)
    variables: Annotated[
        dict[VariableName, VariableValue],
        WithJsonSchema(
            {
                "type": "object",
                "maxProperties": 100,
                "propertyNames": {"minLength": 1, "maxLength": 64, "pattern": NO_CONTROL_PATTERN},
                "additionalProperties": {"type": "string", "maxLength": 1000},
                "description": "Filled into {{name}} placeholders",
            }
        ),
    ] = Field(default_factory=dict, max_length=100)
    ring_timeout_seconds: RingSeconds | None = Field(
        None,
        description="How long the callee may ring; default [asterisk.originate] timeout_seconds",
    )
    amd: bool = Field(
        False,
        strict=True,
        description="Answering-machine detection (on as well when the company's agent has amd = true); "
        "on a machine the bot leaves the agent's voicemail_message, or hangs up",
    )
    agent_id: ResourceId | None = Field(
        None,
        description="The company's agent for this call (GET /api/agents); default: the config's agent. "
        "404 unknown_agent, 409 agent_disabled; a {{placeholder}} it uses that variables and call facts "
        "cannot fill is 400 unknown_placeholder",
    )


class CallListQuery(BaseModel):
    """`from`/`start_date` and `to`/`end_date` are the same bounds under two names; when both are given
    the narrower one holds. A range that holds nothing is an empty page, not an error."""

    model_config = ConfigDict(extra="ignore", populate_by_name=True)

    status: Status | None = None
    direction: Direction | None = None
    amd_result: AmdResult | None = None
    agent_id: ResourceId | None = Field(None, description="Calls run by this agent")
    task_id: ResourceId | None = Field(None, description="Calls placed by this task")
    from_: Instant | None = Field(None, alias="from", description="Created at or after (inclusive)")
    to: Instant | None = Field(None, description="Created before (exclusive)")
    start_date: Instant | None = Field(None, description="Same as `from`")
    end_date: Instant | None = Field(None, description="Same as `to`")
    limit: int = Field(50, ge=1, le=MAX_PAGE)
    offset: int = Field(0, ge=0, le=10_000_000)

    @property
    def since(self) -> float | None:
        bounds = [b for b in (self.from_, self.start_date) if b is not None]
        return max(bounds) if bounds else None

    @property
    def until(self) -> float | None:
        bounds = [b for b in (self.to, self.end_date) if b is not None]
        return min(bounds) if bounds else None


class TransferRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")

    to: str = Field(pattern=TARGET_PATTERN, description="E.164 number or extension")


class DtmfRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")

    digits: str = Field(pattern=r"^[0-9A-D*#]{1,32}$")


class SayRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")

    # Something besides ASCII white space (a class both Python and the document's ECMA regexes read alike).
    text: str = Field(
        min_length=1, max_length=2000, pattern=r"[^ \t\n\r\f\v]", description="Said word for word"
    )
    interrupt: bool = Field(
        False, strict=True, description="true: cut what the bot is saying and speak at once; false: after it"
    )


# -- responses ----------------------------------------------------------------------------------


class UsageOut(BaseModel):
    input_text_tokens: int
    input_audio_tokens: int
    input_cached_tokens: int
    output_text_tokens: int
    output_audio_tokens: int
    transcription_input_tokens: int
    transcription_output_tokens: int
    transcription_seconds: float
    responses: int
    model_seconds: float = Field(description="time connected to a model billed by the minute")


class ModelSegmentOut(BaseModel):
    provider: str
    model: str
    started_at: str
    ended_at: str | None
    ended_because: str | None = Field(description="The error that handed the call to the next model")


class CallOut(BaseModel):
    model_config = ConfigDict(populate_by_name=True)

    call_id: str
    company_id: str
    direction: Direction
    from_: str = Field(alias="from", description="E.164 with '+'; empty for a withheld caller")
    to: str
    caller_name: str | None
    call_objective: str | None
    status: Status
    disconnected_by: str | None = Field(description="caller, bot, api, timeout, error, shutdown")
    error_code: str | None
    dial_outcome: str | None
    created_at: str
    answered_at: str | None
    ended_at: str | None
    duration_seconds: float
    usage: UsageOut
    cost_usd: float | None
    provider: str
    model: str
    frames_in: int
    frames_out: int
    drops: int
    barge_ins: int
    played_ms_estimated: bool
    transcript_lines: int
    transferred_to: str | None
    dtmf: str = Field(
        description="The caller's keys as pressed; each is * when the agent marks them sensitive"
    )
    amd_result: AmdResult | None = Field(description="Answering-machine detection; null when none ran")
    ended_by_guard: Guard | None = Field(description="The guard that ended the call, if one did")
    agent_id: str | None = Field(description="The agent that ran the call; null: the company's default")
    task_id: str | None = Field(description="The scheduled task that placed the call, if one did")
    models: list[ModelSegmentOut] = Field(
        description="Which model served which part of the call (several after a failover), in order"
    )
    has_recording: bool = Field(False, description="GET /api/calls/{call_id}/recording has its WAV")


class Pagination(BaseModel):
    total: int
    limit: int
    offset: int


class CallPage(BaseModel):
    calls: list[CallOut]
    pagination: Pagination


class OneCall(BaseModel):
    call: CallOut


class TranscriptLineOut(BaseModel):
    role: Literal["caller", "bot"]
    text: str
    at: str | None
    truncated: bool


class Transcript(BaseModel):
    call_id: str
    status: Status
    transcript: list[TranscriptLineOut]


class Dialing(BaseModel):
    call_id: str
    status: Status


class Ending(BaseModel):
    call_id: str
    status: Status
    ending: bool


class Transferred(BaseModel):
    call_id: str
    transferred_to: str


class DigitsSent(BaseModel):
    call_id: str
    digits: str


class Saying(BaseModel):
    call_id: str
    interrupt: bool
    queued: bool = Field(description="Always true: the bot speaks as soon as the call's model can")


class Cancelled(BaseModel):
    call_id: str
    status: Status
    error_code: Literal["cancelled"] = "cancelled"


# -- handlers -----------------------------------------------------------------------------------


def _call_id(request: web.Request) -> str:
    call_id = request.match_info["call_id"]
    if not valid_call_id(call_id):
        raise BadRequest("call_id: 1 to 128 letters, digits or . _ : -", code="validation_error")
    return call_id


async def _calls_out(request: web.Request, records: Sequence[Mapping[str, Any]]) -> list[CallOut]:
    """Calls as the API shows them (`records`: their `to_api()`), each saying whether it was recorded."""
    calls = [CallOut.model_validate(r) for r in records]
    recordings = request.app.get(RECORDINGS)
    if recordings is not None and calls:  # derived from the files: nothing to keep in step in the store
        have = await recordings.existing(request[COMPANY].id, [c.call_id for c in calls])
        for call in calls:
            call.has_recording = call.call_id in have
    return calls


async def originate(request: web.Request) -> web.Response:
    company = request[COMPANY]
    body = await parse_body(request, OutboundRequest)
    if not company.owns_phone(body.from_number):
        raise Forbidden(f"{body.from_number} is not one of this company's numbers", code="from_not_allowed")
    session = await request.app[CALLS].originate(
        OutboundCall(
            company_id=company.id,
            from_number=body.from_number,
            to_number=body.to,
            call_objective=body.call_objective,
            first_message=body.first_message,
            variables=body.variables,
            ring_timeout_seconds=body.ring_timeout_seconds,
            amd=body.amd,
            agent_id=body.agent_id or "",
        )
    )
    return ok(Dialing(call_id=session.call_id, status=session.state.value))


async def list_calls(request: web.Request) -> web.Response:
    query = parse_query(request, CallListQuery)
    page = CallQuery(
        company_id=request[COMPANY].id,
        status=query.status,
        direction=query.direction,
        amd_result=query.amd_result,
        agent_id=query.agent_id,
        task_id=query.task_id,
        since=query.since,
        until=query.until,
        limit=query.limit,
        offset=query.offset,
    )
    records, total = await request.app[CALLS].list(page)
    return ok(
        CallPage(
            calls=await _calls_out(request, [r.to_api() for r in records]),
            pagination=Pagination(total=total, limit=page.limit, offset=page.offset),
        )
    )


async def get_call(request: web.Request) -> web.Response:
    record = await request.app[CALLS].record(request[COMPANY].id, _call_id(request))
    (call,) = await _calls_out(request, [record.to_api()])
    return ok(OneCall(call=call))


async def get_transcript(request: web.Request) -> web.Response:
    record = await request.app[CALLS].record(request[COMPANY].id, _call_id(request))
    lines = [TranscriptLineOut.model_validate(line) for line in record.transcript_api()]
    return ok(Transcript(call_id=record.call_id, status=record.status, transcript=lines))


async def end_call(request: web.Request) -> web.Response:
    outcome = await request.app[CALLS].end(request[COMPANY].id, _call_id(request))
    return ok(Ending(call_id=outcome.call_id, status=outcome.status, ending=True))


async def transfer_call(request: web.Request) -> web.Response:
    body = await parse_body(request, TransferRequest)
    outcome = await request.app[CALLS].transfer(request[COMPANY].id, _call_id(request), body.to)
    return ok(Transferred(call_id=outcome.call_id, transferred_to=body.to))


async def send_dtmf(request: web.Request) -> web.Response:
    body = await parse_body(request, DtmfRequest)
    outcome = await request.app[CALLS].send_dtmf(request[COMPANY].id, _call_id(request), body.digits)
    return ok(DigitsSent(call_id=outcome.call_id, digits=body.digits))


async def say(request: web.Request) -> web.Response:
    body = await parse_body(request, SayRequest)
    calls = request.app[CALLS]
    outcome = await calls.say(request[COMPANY].id, _call_id(request), body.text, interrupt=body.interrupt)
    return ok(Saying(call_id=outcome.call_id, interrupt=body.interrupt, queued=True))


async def cancel_call(request: web.Request) -> web.Response:
    outcome = await request.app[CALLS].cancel(request[COMPANY].id, _call_id(request))
    return ok(Cancelled(call_id=outcome.call_id, status=outcome.status))


_CONTROL_ERRORS = (404, 409, 503)
OPERATIONS = (
    Operation(
        "POST",
        "/api/calls/outbound",
        originate,
        "Dial out through Asterisk",
        "calls",
        body=OutboundRequest,
        response=Dialing,
        errors=(402, 403, 404, 409, 429, 503),
    ),
    Operation(
        "GET",
        "/api/calls",
        list_calls,
        "The company's calls, newest first",
        "calls",
        query=CallListQuery,
        response=CallPage,
    ),
    Operation(
        "GET",
        "/api/calls/{call_id}",
        get_call,
        "One call (live counters while it runs)",
        "calls",
        response=OneCall,
        errors=(404,),
    ),
    Operation(
        "GET",
        "/api/calls/{call_id}/transcript",
        get_transcript,
        "What was said",
        "calls",
        response=Transcript,
        errors=(404,),
    ),
    Operation(
        "POST",
        "/api/calls/{call_id}/end",
        end_call,
        "End the call after the bot's current words (a ringing call is cancelled)",
        "calls",
        response=Ending,
        errors=_CONTROL_ERRORS,
    ),
    Operation(
        "POST",
        "/api/calls/{call_id}/transfer",
        transfer_call,
        "Send the caller elsewhere",
        "calls",
        body=TransferRequest,
        response=Transferred,
        errors=_CONTROL_ERRORS,
    ),
    Operation(
        "POST",
        "/api/calls/{call_id}/dtmf",
        send_dtmf,
        "Play DTMF digits to the far party",
        "calls",
        body=DtmfRequest,
        response=DigitsSent,
        errors=_CONTROL_ERRORS,
    ),
    Operation(
        "POST",
        "/api/calls/{call_id}/say",
        say,
        "Make the bot say a message now (409 say_not_supported when the call's model cannot)",
        "calls",
        body=SayRequest,
        response=Saying,
        errors=(404, 409),
    ),
    Operation(
        "POST",
        "/api/calls/{call_id}/cancel",
        cancel_call,
        "End the call at once, no goodbye: failed, error_code cancelled (a ringing call is cancelled)",
        "calls",
        response=Cancelled,
        errors=(404, 409),
    ),
)


def setup_routes(app: web.Application) -> None:
    register(app, OPERATIONS)
