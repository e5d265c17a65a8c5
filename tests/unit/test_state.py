from __future__ import annotations

import pytest

from bridge.session.state import CallEvent, CallState, InvalidTransition, next_state


@pytest.mark.parametrize(
    ("state", "event", "after"),
    [
        (CallState.PENDING, CallEvent.MEDIA_ATTACHED, CallState.CONNECTING),
        (CallState.PENDING, CallEvent.END, CallState.ENDED),
        (CallState.PENDING, CallEvent.FAIL, CallState.FAILED),
        (CallState.CONNECTING, CallEvent.MODEL_READY, CallState.ACTIVE),
        (CallState.CONNECTING, CallEvent.END, CallState.ENDED),
        (CallState.CONNECTING, CallEvent.FAIL, CallState.FAILED),
        (CallState.ACTIVE, CallEvent.END, CallState.ENDED),
        (CallState.ACTIVE, CallEvent.FAIL, CallState.FAILED),
    ],
)
def test_allowed_transitions(state: CallState, event: CallEvent, after: CallState) -> None:
    transition = next_state(state, event)
    assert transition.after is after
    assert transition.changed


@pytest.mark.parametrize("terminal", [CallState.ENDED, CallState.FAILED])
@pytest.mark.parametrize("event", list(CallEvent))
def test_terminal_states_absorb_everything(terminal: CallState, event: CallEvent) -> None:
    transition = next_state(terminal, event)
    assert transition.after is terminal
    assert not transition.changed


@pytest.mark.parametrize(
    ("state", "event"),
    [
        (CallState.PENDING, CallEvent.MODEL_READY),
        (CallState.CONNECTING, CallEvent.MEDIA_ATTACHED),
        (CallState.ACTIVE, CallEvent.MEDIA_ATTACHED),
        (CallState.ACTIVE, CallEvent.MODEL_READY),
    ],
)
def test_senseless_events_are_refused(state: CallState, event: CallEvent) -> None:
    with pytest.raises(InvalidTransition, match=event.value):
        next_state(state, event)
