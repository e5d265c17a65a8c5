"""The call recorder against real SQLite stores: saves at changes, checkpoints of live calls, shutdown."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Callable
from pathlib import Path

import pytest

from bridge.session.records import CallRecorder
from bridge.session.session import CallInfo, CallStats, Session
from bridge.session.state import EndedBy
from bridge.store import CallRecord, Store, TranscriptLine, Usage, open_store

GUARD_S = 10.0  # generous bound on every wait; nothing here asserts speed


class Leg:
    """The counters a media leg would report; the test moves them."""

    def __init__(self) -> None:
        self.stats = CallStats()

    def read(self) -> CallStats:
        return CallStats(self.stats.frames_in, self.stats.frames_out, self.stats.drops)


def new_call(call_id: str = "c1") -> Session:
    return Session(CallInfo(call_id, "acme", "inbound", "+15551230001", "+34987654321"))


def connected(recorder: CallRecorder, call_id: str = "c1", leg: Leg | None = None) -> Session:
    """A call tracked from its creation, with media attached and the model ready."""
    session = new_call(call_id)
    recorder.track(session)
    session.attach_owner()
    if leg is not None:
        session.read_counters_from(leg.read)
    session.mark_active()
    return session


async def stored(store: Store, call_id: str = "c1") -> CallRecord:
    record = await store.get("acme", call_id)
    assert record is not None
    return record


async def wait_for_stored(
    store: Store, done: Callable[[CallRecord], bool], call_id: str = "c1"
) -> CallRecord:
    """Poll the store until `done(record)` holds."""
    async with asyncio.timeout(GUARD_S):
        while True:
            record = await store.get("acme", call_id)
            if record is not None and done(record):
                return record
            await asyncio.sleep(0.01)


@pytest.fixture
async def store() -> AsyncIterator[Store]:
    opened = await open_store("sqlite://:memory:")
    yield opened
    await opened.close()


async def test_every_state_change_is_saved(store: Store) -> None:
    recorder = CallRecorder(store)
    session = new_call()
    recorder.track(session)
    await recorder.flush()
    assert (await stored(store)).status == "pending"
    session.attach_owner()
    await recorder.flush()
    assert (await stored(store)).status == "connecting"
    session.mark_active()
    await recorder.flush()
    assert (await stored(store)).status == "active"
    session.finish(EndedBy.CALLER)
    await recorder.flush()
    final = await stored(store)
    assert (final.status, final.disconnected_by) == ("ended", "caller")
    assert final.updated_at is not None
    assert final.ended_at is not None
    assert final.updated_at >= final.ended_at


async def test_the_checkpoint_loop_saves_a_live_call_as_it_goes(store: Store) -> None:
    recorder = CallRecorder(store, checkpoint_seconds=0.02)
    recorder.start()
    leg = Leg()
    session = connected(recorder, leg=leg)
    await recorder.flush()
    assert (await stored(store)).frames_in == 0
    # The call moves on without any state change: only checkpoints can carry this.
    leg.stats = CallStats(frames_in=250, frames_out=200, drops=2)
    session.add_line("caller", "hello", item_id="u1")
    session.add_usage(Usage(input_audio_tokens=100, responses=1), 0.002)
    session.barge_ins = 1
    checkpoint = await wait_for_stored(store, lambda r: r.frames_in == 250 and bool(r.transcript))
    assert checkpoint.status == "active"
    assert (checkpoint.frames_out, checkpoint.drops, checkpoint.barge_ins) == (200, 2, 1)
    assert [line.text for line in checkpoint.transcript] == ["hello"]
    assert (checkpoint.usage.input_audio_tokens, checkpoint.cost_usd) == (100, 0.002)
    # The duration is the one at the moment the checkpoint was taken, which it carries.
    assert checkpoint.updated_at is not None
    assert session.connected_at is not None
    assert checkpoint.duration_seconds == round(checkpoint.updated_at - session.connected_at, 3)
    # And it keeps going.
    leg.stats = CallStats(frames_in=300, frames_out=260, drops=2)
    later = await wait_for_stored(store, lambda r: r.frames_in == 300)
    assert later.updated_at is not None
    assert later.updated_at > checkpoint.updated_at
    await recorder.close()
    assert not recorder.running
    assert recorder.failures == 0


async def test_only_calls_with_media_are_checkpointed(store: Store) -> None:
    recorder = CallRecorder(store)
    pending = new_call("pending-1")
    recorder.track(pending)
    live = connected(recorder, "live-1")
    await recorder.flush()
    assert await recorder.checkpoint() == 1  # the pending call has nothing that moves
    await recorder.flush()
    live.finish(EndedBy.CALLER)
    pending.finish(EndedBy.TIMEOUT, "media_timeout", failed=True)
    await recorder.flush()
    assert await recorder.checkpoint() == 0  # over: their final saves were the last
    assert (await stored(store, "live-1")).status == "ended"
    assert (await stored(store, "pending-1")).status == "failed"


async def test_a_call_gets_one_checkpoint_in_flight_at_most(store: Store) -> None:
    recorder = CallRecorder(store)
    connected(recorder)
    await recorder.flush()
    assert await recorder.checkpoint() == 1
    assert await recorder.checkpoint() == 0  # a slow disk gets no growing queue of snapshots
    await recorder.flush()
    assert await recorder.checkpoint() == 1
    await recorder.flush()


async def test_periodic_checkpoints_take_the_calls_in_turn_a_share_at_a_time(store: Store) -> None:
    # Never every call at once: 200 snapshots in one go stalled every call's audio for 25-30 ms.
    recorder = CallRecorder(store, checkpoint_seconds=60)
    legs = [Leg() for _ in range(20)]
    calls = [connected(recorder, f"c{index}", leg) for index, leg in enumerate(legs)]
    await recorder.flush()
    for leg in legs:
        leg.stats = CallStats(frames_in=1)
    saved_so_far: list[set[int]] = []
    for _ in range(10):
        assert recorder.checkpoint_share(10) == 2
        await recorder.flush()
        saved_so_far.append({i for i in range(20) if (await stored(store, f"c{i}")).frames_in == 1})
    sizes = [len(saved) for saved in saved_so_far]
    assert sizes == list(range(2, 21, 2))  # two new calls per share, none twice before all had a turn
    assert saved_so_far[-1] == set(range(20))
    # A call that just came joins the turn; calls that ended leave it.
    connected(recorder, "late", Leg())
    await recorder.flush()
    assert recorder.checkpoint_share(10) == 2  # 21 live calls: 2.1, the 0.1 carried over
    await recorder.flush()
    for call in calls[:3]:
        call.finish(EndedBy.CALLER)
    await recorder.flush()
    assert recorder.checkpoint_share(10) == 1  # 18 live calls: 0.1 + 1.8


async def test_a_single_call_is_checkpointed_once_per_interval_not_once_per_share(store: Store) -> None:
    recorder = CallRecorder(store, checkpoint_seconds=60)
    connected(recorder)
    await recorder.flush()
    saved = []
    for _ in range(20):
        saved.append(recorder.checkpoint_share(10))
        await recorder.flush()
    assert saved == ([0] * 9 + [1]) * 2


async def test_many_calls_are_checkpointed_in_one_pass(store: Store) -> None:
    recorder = CallRecorder(store)
    legs = [Leg() for _ in range(120)]  # more than one batch
    for index, leg in enumerate(legs):
        connected(recorder, f"c{index}", leg)
        leg.stats = CallStats(frames_in=index + 1)
    await recorder.flush()
    assert await recorder.checkpoint() == 120
    await recorder.flush()
    for index in (0, 49, 50, 119):
        assert (await stored(store, f"c{index}")).frames_in == index + 1


async def test_close_stops_the_loop_and_saves_live_calls_a_last_time(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path}/calls.db"
    store = await open_store(url)
    recorder = CallRecorder(store, checkpoint_seconds=60)  # no periodic checkpoint during this test
    recorder.start()
    assert recorder.running
    leg = Leg()
    connected(recorder, leg=leg)
    leg.stats = CallStats(frames_in=42)
    await recorder.close()
    assert not recorder.running
    await store.close()
    async with await open_store(url) as reopened:
        assert (await stored(reopened)).frames_in == 42


async def test_a_crashed_bridge_leaves_the_last_checkpoint_for_the_restart(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path}/calls.db"
    store = await open_store(url)
    recorder = CallRecorder(store, checkpoint_seconds=60)
    leg = Leg()
    session = connected(recorder, leg=leg)
    session.connected_at = time.time() - 5  # on the line for a while
    session.add_line("bot", "Hello, Acme here.", item_id="a1")
    leg.stats = CallStats(frames_in=150, frames_out=120)
    await recorder.checkpoint()
    await recorder.flush()
    checkpoint = await stored(store)
    leg.stats = CallStats(frames_in=999)  # after the last checkpoint: lost with the process
    await store.close()  # as far as the file goes, a kill after the last commit looks the same
    async with await open_store(url) as restarted:
        assert await restarted.mark_interrupted(checkpoint.created_at + 3600) == 1
        after = await stored(restarted)
    assert (after.status, after.error_code) == ("failed", "bridge_restarted")
    assert after.ended_at == checkpoint.updated_at
    assert (after.frames_in, after.frames_out) == (150, 120)
    assert after.duration_seconds == checkpoint.duration_seconds > 0
    assert after.transcript == (
        TranscriptLine(role="bot", text="Hello, Acme here.", at=after.transcript[0].at),
    )


def test_the_interval_must_be_positive() -> None:
    with pytest.raises(ValueError, match="positive"):
        CallRecorder(None, checkpoint_seconds=0)  # type: ignore[arg-type]
