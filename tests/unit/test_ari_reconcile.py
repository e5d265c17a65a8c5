"""Reconciling after the ARI events socket comes back: which legs are asked about."""

from __future__ import annotations

import asyncio
from typing import Any, cast

from bridge.asterisk.ari_calls import STARTED, Call, StasisCalls
from bridge.asterisk.ari_client import AriClient


class RecordingClient:
    """ARI as far as reconciling goes: every channel asked about is up in our Stasis app."""

    def __init__(self) -> None:
        self.asked: list[str] = []

    async def request(self, method: str, path: str, *args: Any, **kwargs: Any) -> Any:
        self.asked.append(f"{method} {path}")
        await asyncio.sleep(0)
        return {"state": "Up", "dialplan": {"app_name": "Stasis"}}


def dialing(calls: StasisCalls, call_id: str) -> Call:
    leg = calls.new_leg(call_id)
    call = Call(call_id, leg)
    calls.track(call, leg)
    return call


async def test_only_the_legs_live_when_the_socket_came_back_are_asked_about() -> None:
    client = RecordingClient()
    calls = StasisCalls(cast(AriClient, client))
    missed = dialing(calls, "call-before")
    reconciling = calls.reconcile()  # the socket is up again: what it may have missed is fixed now
    # Dialed after: its StasisStart comes on the socket, and a GET would only race it.
    after = dialing(calls, "call-after")
    await reconciling
    assert client.asked == ["GET channels/call-before"]
    assert missed.trunk.outcome.result() == STARTED
    assert not after.trunk.outcome.done()
    await calls.close()
