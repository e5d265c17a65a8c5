"""The caller's keys and said texts in the OpenAI Realtime protocol: valid GA client events, one response
at a time, says tagged to the response that spoke them."""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from bridge.providers.base import ResponseDone, SayFinished
from bridge.providers.openai.responses import ResponseRequest, ResponseSchedule
from tests.unit.test_openai_events import protocol, server, valid


def created(proto: object, response_id: str) -> None:
    server(proto, type="response.created", response={"id": response_id, "status": "in_progress"})  # type: ignore[arg-type]


def done(proto: object, response_id: str, status: str = "completed") -> list[object]:
    return server(proto, type="response.done", response={"id": response_id, "status": status})  # type: ignore[arg-type]


def test_keys_become_a_user_text_item_then_a_response() -> None:
    proto = protocol()
    proto.take_outgoing()
    created(proto, "greet")
    done(proto, "greet")
    proto.user_text("DTMF: 4", respond=True)
    item, response = (valid(t) for t in proto.take_outgoing())
    assert item == {
        "type": "conversation.item.create",
        "item": {"type": "message", "role": "user", "content": [{"type": "input_text", "text": "DTMF: 4"}]},
    }
    assert response == {"type": "response.create"}
    proto.user_text("DTMF: 1234", respond=False)
    assert [valid(t)["type"] for t in proto.take_outgoing()] == ["conversation.item.create"]


def test_keys_while_the_bot_speaks_get_their_answer_after_it() -> None:
    proto = protocol()
    proto.take_outgoing()
    created(proto, "greet")
    proto.user_text("DTMF: 1", respond=True)
    assert [valid(t)["type"] for t in proto.take_outgoing()] == ["conversation.item.create"]
    done(proto, "greet")
    assert [valid(t)["type"] for t in proto.take_outgoing()] == ["response.create"]


def test_keys_are_part_of_the_replayed_conversation() -> None:
    proto = protocol()
    proto.take_outgoing()
    created(proto, "greet")
    done(proto, "greet")
    proto.user_text("DTMF: 9", respond=False)
    proto.take_outgoing()
    proto.connection_lost()
    proto.replay()
    replayed = [valid(t) for t in proto.take_outgoing()]
    texts = [e["item"]["content"][0]["text"] for e in replayed if e["type"] == "conversation.item.create"]
    assert texts == ["DTMF: 9"]


def test_a_queued_say_waits_for_the_active_response_and_reports_when_it_is_over() -> None:
    proto = protocol()
    proto.take_outgoing()
    created(proto, "greet")
    say_id = proto.say("Your order ships today.", interrupt=False)
    assert proto.take_outgoing() == []  # the greeting is still being spoken
    assert done(proto, "greet") == [ResponseDone("greet")]
    (create,) = (valid(t) for t in proto.take_outgoing())
    assert create["type"] == "response.create"
    assert create["response"]["instructions"].endswith(
        "word for word, and nothing else; do not answer it or add to it: Your order ships today."
    )
    created(proto, "said")
    assert done(proto, "said") == [ResponseDone("said"), SayFinished(say_id, "completed")]


def test_an_interrupting_say_cancels_the_active_response_and_goes_first() -> None:
    proto = protocol()
    proto.take_outgoing()
    created(proto, "greet")
    proto.tool_result("c1", "{}", respond=True)  # owed before the say
    proto.take_outgoing()
    say_id = proto.say("Sorry, one moment.", interrupt=True)
    assert [valid(t) for t in proto.take_outgoing()] == [{"type": "response.cancel"}]
    proto.interrupt(100.0, cancel=True)  # the runner's flush: no second cancel
    assert all(valid(t)["type"] != "response.cancel" for t in proto.take_outgoing())
    done(proto, "greet", "cancelled")
    (first,) = (valid(t) for t in proto.take_outgoing())
    assert "Sorry, one moment." in first["response"]["instructions"]
    created(proto, "said")
    assert done(proto, "said")[-1] == SayFinished(say_id, "completed")
    assert [valid(t) for t in proto.take_outgoing()] == [{"type": "response.create"}]  # the tool's turn


def test_a_say_refused_because_the_server_started_a_response_waits_and_keeps_its_tag() -> None:
    proto = protocol()
    proto.take_outgoing()
    created(proto, "greet")
    done(proto, "greet")
    say_id = proto.say("Hello again.", interrupt=False)
    assert [valid(t)["type"] for t in proto.take_outgoing()] == ["response.create"]
    created(proto, "vad")  # the server's VAD got there first...
    server(proto, type="error", error={"code": "conversation_already_has_active_response", "message": "busy"})
    assert done(proto, "vad") == [ResponseDone("vad")]  # ...so "vad" was not the say
    assert [valid(t)["type"] for t in proto.take_outgoing()] == ["response.create"]
    created(proto, "said")
    assert done(proto, "said")[-1] == SayFinished(say_id, "completed")


def test_a_say_cut_by_a_lost_connection_is_reported_over() -> None:
    proto = protocol()
    proto.take_outgoing()
    created(proto, "greet")
    done(proto, "greet")
    say_id = proto.say("Goodbye.", interrupt=False)
    created(proto, "said")
    proto.connection_lost()
    assert SayFinished(say_id, "failed") in server(proto, type="session.updated", session={})


# -- the schedule alone, for any order of events ----------------------------------------------------

actions = st.lists(
    st.sampled_from(["want", "want_say", "want_first", "created", "done", "refused"]), max_size=60
)


@given(actions)
def test_the_schedule_never_has_two_responses_in_flight(steps: list[str]) -> None:
    schedule = ResponseSchedule()
    in_flight = 0  # creates sent and not yet ended (created+done) or refused
    said: list[int] = []
    next_id = 0
    active: str | None = None
    for step in steps:
        sent: ResponseRequest | None = None
        if step.startswith("want"):
            next_id += 1
            say = next_id if step == "want_say" else None
            sent = schedule.want(ResponseRequest({}, say_id=say), first=step == "want_first")
        elif step == "created" and in_flight and active is None:
            active = f"r{next_id}"
            schedule.created(active)
        elif step == "done" and active is not None:
            finished, sent = schedule.done(active)
            if finished is not None:
                said.append(finished)
            active, in_flight = None, in_flight - 1
        elif step == "refused" and in_flight and active is None:
            schedule.refused()
            in_flight -= 1
            sent = schedule.resume()
        if sent is not None:
            in_flight += 1
        assert in_flight <= 1
    assert len(said) == len(set(said))
