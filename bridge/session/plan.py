"""What a call is run with (its plan and timeouts), and the one rule that turns its ending into a record.

The runner (call.py) runs a call by this plan; `record_outcome` is the only place an ending becomes
`ended` or `failed`, and `provider_or_refuse` the only place a call with no model to be had is refused.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

from bridge.errors import Unavailable
from bridge.providers.base import Provider, ProviderUnavailable
from bridge.session.conduct import ConductTimeouts
from bridge.session.control import CallController
from bridge.session.costs import PriceTable
from bridge.session.leg_tap import LegTap
from bridge.session.policy import CallPolicy
from bridge.session.session import EndRequest, Session
from bridge.session.state import CallState, EndedBy
from bridge.session.tools import ToolBox


@dataclass(frozen=True, slots=True)
class CallTimeouts:
    media_start: float = 5.0  # the peer must say its format this soon after the socket opens
    provider_connect: float = 10.0
    hangup: float = 30.0  # drain plus HANGUP; the leg bounds its own drain well inside this
    provider_close: float = 2.0
    transfer_playout: float = 15.0  # the bot's last words before a transfer play out this long at most
    transfer_leave: float = 3.0  # after a redirect Asterisk closes the media socket; then we hang up
    # Closing and voicemail lines, and the wait for a voicemail beep.
    conduct: ConductTimeouts = field(default_factory=ConductTimeouts)


ModelBuilder = Callable[[Sequence[tuple[str, str]]], Provider]


@dataclass(frozen=True, slots=True)
class Fallback:
    """A model to hand the call to when the one serving it refuses or is lost (`fallback_providers`)."""

    name: str
    model: str
    build: (
        ModelBuilder  # the conversation so far, as (role, text) -> a fresh provider (or ProviderUnavailable)
    )
    prices: PriceTable | None = None


@dataclass(frozen=True, slots=True)
class CallPlan:
    """Everything a call needs besides its leg: the model and what the model may do."""

    provider: Provider
    tools: ToolBox | None = None
    prices: PriceTable | None = None
    controller: CallController | None = None
    local_barge_in_ms: int | None = None  # our own VAD interrupts the bot after this much speech
    policy: CallPolicy = field(default_factory=CallPolicy)  # keys, guards, closing lines, answering machines
    fallbacks: Sequence[Fallback] = ()  # in order; each takes over with the conversation so far
    tap: Callable[[], LegTap | None] | None = None  # opened when the call runs: e.g. its recording


DRAINED_ENDINGS = frozenset({EndedBy.BOT, EndedBy.API, EndedBy.SHUTDOWN, EndedBy.TIMEOUT})


ProviderFactory = Callable[[Session], CallPlan]


def record_outcome(session: Session, outcome: EndRequest) -> None:
    """End the call by the one rule every ending follows, whatever produced it.

    An error before the call became `active` fails it: `failed`, with the machine code as
    error_code. Once it was active, any ending is `ended`; for an error, disconnected_by `error`
    and the code. (`outcome.failed` is for calls nobody runs; see `Session.request_end`.) A call
    cancelled through the API fails whatever its state.
    """
    is_error = outcome.by is EndedBy.ERROR
    code = outcome.error_code or ("internal_error" if is_error else None)
    failed = outcome.cancelled or (is_error and session.state is not CallState.ACTIVE)
    if outcome.guard is not None and not session.state.is_terminal:
        session.ended_by_guard = outcome.guard
    session.finish(outcome.by, code, failed=failed)


def provider_or_refuse(session: Session, make_provider: ProviderFactory) -> CallPlan:
    """The call's provider; if there is none to be had, the call fails and the socket is refused."""
    try:
        return make_provider(session)
    except ProviderUnavailable as exc:
        if exc.provider:  # the record says which model never answered, though none was built
            session.provider = exc.provider
        # Refusing lets the dialplan fail over at once (Dial returns) instead of dead air.
        record_outcome(session, EndRequest(EndedBy.ERROR, exc.code))
        raise Unavailable(str(exc), code=exc.code) from exc
