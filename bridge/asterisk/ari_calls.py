"""The calls an ARI controller holds in its Stasis app: their legs, what each event does to them, and
their teardown. The flows that create them are in `asterisk/ari.py`.

While in Stasis nothing hangs up for us: when an established leg leaves the app (hangup, transfer, the
media socket closing) the call's other legs and its bridge are removed here. A trunk that runs AMD() in the
dialplan leaves the app on purpose and comes back: that StasisEnd is expected, not the end of the call.
After a reconnect of the events socket, live legs are reconciled with `GET /channels/{id}`.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections import OrderedDict
from collections.abc import Coroutine
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import quote

from bridge.asterisk import ari_mapping as mapping
from bridge.asterisk.ari_client import AriClient
from bridge.session.control import ControlError

STARTED, ENDED = "started", "ended"
_CAUSES_KEPT = 2048


def channel_path(channel_id: str, action: str = "") -> str:
    return f"channels/{quote(channel_id, safe='')}" + (f"/{action}" if action else "")


@dataclass(eq=False)
class Leg:
    channel_id: str
    outcome: asyncio.Future[str]  # STARTED on StasisStart, ENDED when destroyed first
    name: str = ""
    caller: tuple[str, str] = ("", "")  # its own caller id (number, name), from the latest snapshot
    ringing: bool = False
    dialstatus: str = ""
    cause: int | None = None
    cause_txt: str = ""
    left: bool = False  # left our Stasis app (hung up, or continued into the dialplan)


@dataclass(eq=False)
class Call:
    call_id: str
    trunk: Leg  # the caller (inbound) or the callee (outbound)
    media: Leg | None = None
    bridge_id: str = ""
    cancelled: bool = False
    teardown: asyncio.Task[None] | None = None
    legs: list[Leg] = field(default_factory=list)
    amd: asyncio.Future[tuple[str, str]] | None = None  # set while the trunk runs AMD() in the dialplan

    def check_alive(self) -> None:
        if self.teardown is not None:
            raise ControlError("the far end hung up during call setup", "channel_not_found")


class StasisCalls:
    def __init__(self, client: AriClient) -> None:
        self._client = client
        self.calls: dict[str, Call] = {}
        self._legs: dict[str, tuple[Call, Leg]] = {}
        self._causes: OrderedDict[str, int] = OrderedDict()
        self._tasks: set[asyncio.Task[Any]] = set()

    def last_hangup_cause(self, channel_id: str) -> int | None:
        return self._causes.get(channel_id)

    def knows(self, channel_or_call_id: str) -> bool:
        return channel_or_call_id in self.calls or channel_or_call_id in self._legs

    def new_leg(self, channel_id: str) -> Leg:
        return Leg(channel_id, asyncio.get_running_loop().create_future())

    def track(self, call: Call, leg: Leg) -> None:
        self.calls[call.call_id] = call
        call.legs.append(leg)
        self._legs[leg.channel_id] = (call, leg)

    def forget(self, call: Call) -> None:
        if self.calls.get(call.call_id) is call:
            del self.calls[call.call_id]
        for leg in call.legs:
            self._legs.pop(leg.channel_id, None)

    def spawn(self, coro: Coroutine[Any, Any, Any]) -> asyncio.Task[Any]:
        task: asyncio.Task[Any] = asyncio.create_task(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)
        return task

    async def close(self) -> None:
        tasks = list(self._tasks)
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        for call in list(self.calls.values()):
            for leg in call.legs:
                if not leg.outcome.done():
                    leg.outcome.set_exception(
                        ControlError("the ARI controller closed", "asterisk_unavailable")
                    )

    # --- teardown -----------------------------------------------------------------------------------

    async def finish(self, call: Call) -> None:
        """Tear the call down now (failed setup) and wait until it is done."""
        self.end_call(call)
        if call.teardown is not None:
            await asyncio.shield(call.teardown)
        if any(not leg.left for leg in call.legs):  # created while the first pass ran (e.g. the media leg)
            await self._teardown(call)

    def end_call(self, call: Call) -> None:
        if call.teardown is None:
            call.teardown = self.spawn(self._teardown(call))

    async def _teardown(self, call: Call) -> None:
        for leg in call.legs:
            if not leg.left:  # a leg that left Stasis alive (transfer, failover) is the dialplan's now
                with contextlib.suppress(ControlError):
                    await self._client.request("DELETE", channel_path(leg.channel_id), {"reason": "normal"})
                    leg.left = True
        if call.bridge_id:
            with contextlib.suppress(ControlError):
                await self._client.request("DELETE", f"bridges/{quote(call.bridge_id, safe='')}")
        self.forget(call)

    # --- events -------------------------------------------------------------------------------------

    def apply(self, event: dict[str, Any]) -> bool:
        """Update the legs an event is about; False when it is about a channel no call holds."""
        kind = event.get("type")
        channel = event.get("peer" if kind == "Dial" else "channel")
        if not isinstance(channel, dict):
            return True
        channel_id = str(channel.get("id", ""))
        if kind == "ChannelDestroyed" and isinstance(event.get("cause"), int):
            self._causes[channel_id] = event["cause"]
            while len(self._causes) > _CAUSES_KEPT:
                self._causes.popitem(last=False)
        found = self._legs.get(channel_id)
        if found is None:
            return False
        call, leg = found
        leg.name = str(channel.get("name", leg.name))
        if "caller" in channel:
            leg.caller = mapping.party(channel["caller"])
        if kind == "ChannelStateChange" and channel.get("state") == "Ringing":
            leg.ringing = True
        elif kind == "Dial":
            status = str(event.get("dialstatus", ""))
            if status == "RINGING":
                leg.ringing = True
            elif status not in ("", "ANSWER", "PROGRESS", "PROCEEDING"):
                leg.dialstatus = status
        elif kind == "StasisStart":
            if call.amd is not None and leg is call.trunk:  # back from the AMD context
                leg.left = False
                if not call.amd.done():
                    call.amd.set_result(mapping.amd_result(event.get("args")))
            elif not leg.outcome.done():
                leg.outcome.set_result(STARTED)
        elif kind == "StasisEnd" and call.amd is not None and leg is call.trunk:
            leg.left = True  # running AMD() in the dialplan, which sends it back
        elif kind in ("StasisEnd", "ChannelDestroyed"):
            if kind == "ChannelDestroyed":
                leg.cause, leg.cause_txt = event.get("cause"), str(event.get("cause_txt", ""))
                if call.amd is not None and not call.amd.done() and leg is call.trunk:
                    call.amd.set_result(("HANGUP", "hung up during AMD"))
            self._leg_left(call, leg)
        return True

    def _leg_left(self, call: Call, leg: Leg) -> None:
        leg.left = True
        if not leg.outcome.done():
            leg.outcome.set_result(ENDED)
        else:  # an established leg left: the call is over for us, remove what remains
            self.end_call(call)

    def reconcile(self) -> Coroutine[Any, Any, None]:
        """Events may have been missed while the socket was down: ask Asterisk about each leg live when it
        came back. The legs are taken now, as the socket connects: one created after that hears its events
        on the socket, and asking about it too would only race them."""
        return self._reconcile([(call, leg) for call in self.calls.values() for leg in call.legs])

    async def _reconcile(self, legs: list[tuple[Call, Leg]]) -> None:
        for call, leg in legs:
            if leg.left:
                continue
            try:
                channel = await self._client.request("GET", channel_path(leg.channel_id))
            except ControlError as exc:
                if exc.code != "channel_not_found":
                    return  # unreachable again; the next reconnect retries
                self._leg_left(call, leg)
                continue
            in_stasis = isinstance(channel, dict) and channel.get("dialplan", {}).get("app_name") == "Stasis"
            if in_stasis and channel.get("state") == "Up" and not leg.outcome.done():
                leg.outcome.set_result(STARTED)
