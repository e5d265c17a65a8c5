"""A strict fake of Asterisk's ARI (REST + events WebSocket) on a loopback port, for controller tests.

It follows res/ari/resource_channels.c where that matters to a client: 404 unknown channel, 409 when an
operation needs Stasis and the channel is not in it, 412 for a channel not yet answered, 409 duplicate
channelId, 400 for bad or unknown parameters (stricter than Asterisk, which ignores unknown ones, so typos
fail tests). Outbound calls follow a per-number `Script`; inbound callers enter Stasis as the dialplan's
`Stasis(<app>,inbound,${EXTEN})` makes them (`stasis_caller`). externalMedia dials the bridge's media
socket over chan_websocket or AudioSocket (the `on_answer` hook plays Asterisk's side). A channel that
`continue`s into `amd_context` runs AMD() and comes back with `Stasis(<app>,amd,STATUS,CAUSE)`. Caller
id and connected line are modelled as the captures show (see `ari_model`). Every request is recorded.
"""

from __future__ import annotations

import asyncio
import base64
import inspect
import itertools
import json
import re
import uuid
from collections.abc import Awaitable, Callable
from typing import Any

from aiohttp import WSMsgType, web

from tests.fakes.ari_model import (
    BRIDGE_TYPES,
    CAUSE_TEXT,
    HANGUP_REASONS,
    AnswerHook,
    FakeChannel,
    MediaDial,
    RecordedRequest,
    Script,
    bad_request,
    body_variables,
    error,
    now,
    parse_caller_id,
    set_variables,
    websocket_options,
)

__all__ = ["FakeAriServer", "FakeChannel", "MediaDial", "RecordedRequest", "Script"]
# The parsed JSON body, kept for the handler (a typed key: aiohttp warns once per process on str keys,
# which made the fake's first request fail or pass depending on what ran before it).
REQUEST_BODY = web.RequestKey("ari_body", object)
_HOST_PORT = re.compile(r"^[A-Za-z0-9.\-\[\]:]+:[0-9]{1,5}$")


class FakeAriServer:
    def __init__(
        self,
        *,
        username: str = "bridge",
        password: str = "ari-secret",
        read_only: bool = False,
        media_contexts: tuple[str, ...] = ("bridge-outbound",),
        on_answer: AnswerHook | None = None,
    ) -> None:
        self.username, self.password, self.read_only = username, password, read_only
        self.media_contexts = media_contexts
        self.on_answer = on_answer
        self.asterisk_id = "02:42:ac:11:00:02"
        self.requests: list[RecordedRequest] = []
        self.channels: dict[str, FakeChannel] = {}
        self.bridges: dict[str, list[str]] = {}
        self.scripts: dict[str, Script] = {}
        self.default_script = Script.ANSWER
        self.amd_context = "bridge-amd"
        self.amd_results: dict[str, tuple[str, str]] = {}  # channel id -> (AMDSTATUS, AMDCAUSE)
        self.default_amd = ("HUMAN", "HUMAN-200-300")
        self.consumers: dict[str, web.WebSocketResponse] = {}
        self.events_sent: list[dict[str, Any]] = []
        self.connections = 0  # events sockets ever accepted
        self.refuse_events = False  # answer the events upgrade with 503, as a half-started Asterisk would
        self.stall: set[str] = set()  # paths whose requests hang until close (for client timeouts)
        self._release = asyncio.Event()
        self._ids = itertools.count(1)
        self._tasks: set[asyncio.Task[None]] = set()
        self._sockets: list[web.WebSocketResponse] = []
        self._runner: web.AppRunner | None = None
        self._inhibited: set[str] = set()  # channels added with inhibitConnectedLineUpdates
        self.port = 0

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    async def start(self) -> None:
        app = web.Application(middlewares=[self._gatekeeper])
        channel = "/ari/channels/{id}"
        app.router.add_get("/ari/events", self._events)
        app.router.add_get("/ari/channels", self._list)
        app.router.add_post("/ari/channels", self._originate)
        app.router.add_post("/ari/channels/externalMedia", self._external_media)
        app.router.add_get(channel, self._get)
        app.router.add_delete(channel, self._hangup)
        app.router.add_post(channel + "/answer", self._answer)
        app.router.add_post(channel + "/continue", self._continue)
        app.router.add_post(channel + "/redirect", self._redirect)
        app.router.add_post(channel + "/dtmf", self._dtmf)
        app.router.add_get(channel + "/variable", self._get_variable)
        app.router.add_post(channel + "/variable", self._set_variable)
        app.router.add_post("/ari/bridges", self._create_bridge)
        app.router.add_post("/ari/bridges/{id}/addChannel", self._add_channel)
        app.router.add_delete("/ari/bridges/{id}", self._destroy_bridge)
        self._runner = web.AppRunner(app)
        await self._runner.setup()
        site = web.TCPSite(self._runner, "127.0.0.1", 0)
        await site.start()
        self.port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]

    async def close(self) -> None:
        self._release.set()
        for task in list(self._tasks):
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        for ws in self._sockets:
            await ws.close()
        if self._runner is not None:
            await self._runner.cleanup()

    async def __aenter__(self) -> FakeAriServer:
        await self.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    # --- test controls ------------------------------------------------------------------------------

    def requests_to(self, method: str, path: str) -> list[RecordedRequest]:
        return [r for r in self.requests if r.method == method and r.path == path]

    def events_of(self, kind: str, channel_id: str) -> list[dict[str, Any]]:
        return [
            e for e in self.events_sent if e["type"] == kind and e.get("channel", {}).get("id") == channel_id
        ]

    async def drop_events(self) -> None:
        """Close every events socket, as a restarting Asterisk or a broken network would."""
        consumers, self.consumers = list(self.consumers.values()), {}
        for ws in consumers:
            await ws.close()

    def add_inbound_call(self, trunk: FakeChannel, media: FakeChannel) -> None:
        """A dialplan `Dial(WebSocket/..)` or `Dial(AudioSocket/..)` call: both legs outside Stasis."""
        trunk.state = media.state = "Up"
        trunk.variables["BRIDGEPEER"], media.variables["BRIDGEPEER"] = media.name, trunk.name
        self.channels[trunk.id], self.channels[media.id] = trunk, media

    async def stasis_caller(
        self, called: str, *, caller: str = "+34600111555", name: str = "Alice Caller", app: str = "bridge"
    ) -> FakeChannel:
        """A caller whose dialplan ran `Stasis(<app>,inbound,${EXTEN})`: state Ring, args ["inbound",
        <called>] (captures: ari_inbound_stasis). Its connected line starts as its own identity, as the
        captured Local channel's did, so a blanking update is visible."""
        number = next(self._ids)
        channel = FakeChannel(
            f"1767225700.{number}",
            f"PJSIP/trunk-{number:08x}",
            state="Ring",
            app=app,
            subscribed=False,
            caller=caller,
            caller_name=name,
            connected=caller,
            connected_name=name,
            context="bridge-inbound-ari",
            exten=called,
            created=now(),
        )
        self.channels[channel.id] = channel
        await self._enter_stasis(channel, ["inbound", called])
        return channel

    async def enter_stasis(self, channel: FakeChannel, args: list[str]) -> None:
        """A channel the dialplan sends into the app (`Stasis(<app>,<args>)`)."""
        self.channels[channel.id] = channel
        await self._enter_stasis(channel, args)

    async def far_end_hangup(self, channel_id: str, cause: int = 16) -> None:
        await self._destroy(self.channels[channel_id], cause)

    # --- plumbing -----------------------------------------------------------------------------------

    def _authorised(self, request: web.Request) -> bool:
        header = request.headers.get("Authorization", "")
        if header.startswith("Basic "):
            try:
                credentials = base64.b64decode(header[6:], validate=True).decode()
            except ValueError:
                return False
        else:
            credentials = request.query.get("api_key", "")
        user, _, password = credentials.partition(":")
        return (user, password) == (self.username, self.password)

    @web.middleware
    async def _gatekeeper(
        self, request: web.Request, handler: Callable[[web.Request], Awaitable[web.StreamResponse]]
    ) -> web.StreamResponse:
        body: Any = None
        if request.can_read_body:
            try:
                body = await request.json()
            except ValueError:
                return error(400, "Invalid JSON body")
        query = {k: v for k, v in request.query.items() if k != "api_key"}
        self.requests.append(RecordedRequest(request.method, request.path, query, body))
        if request.path.endswith("/"):
            return error(404, "Not found")  # Asterisk refuses trailing slashes
        if not self._authorised(request):
            response = error(401, "Authentication required")
            response.headers["WWW-Authenticate"] = 'Basic realm="Asterisk REST Interface"'
            return response
        if self.read_only and request.method != "GET":
            return error(403, "Forbidden")
        request[REQUEST_BODY] = body
        if request.path in self.stall:
            await self._release.wait()
        return await handler(request)

    @staticmethod
    def _params(
        request: web.Request, allowed: set[str], required: frozenset[str] | set[str] = frozenset()
    ) -> dict[str, str]:
        query = {k: v for k, v in request.query.items() if k != "api_key"}
        unknown = set(query) - allowed
        if unknown:
            raise bad_request(f"unknown parameters {sorted(unknown)}")
        missing = {name for name in required if not query.get(name)}
        if missing:
            raise bad_request(f"missing parameters {sorted(missing)}")
        return query

    def _spawn(self, coro: Awaitable[None]) -> None:
        task: asyncio.Task[None] = asyncio.ensure_future(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _emit(self, app: str, kind: str, **fields: Any) -> None:
        ws = self.consumers.get(app)
        event = {
            "type": kind,
            "timestamp": now(),
            "application": app,
            "asterisk_id": self.asterisk_id,
            **fields,
        }
        if ws is not None and not ws.closed:
            self.events_sent.append(event)
            await ws.send_str(json.dumps(event))

    async def _channel_event(self, channel: FakeChannel, kind: str, **fields: Any) -> None:
        """An event about a channel reaches the app while it is in Stasis, or always when the app made it."""
        if channel.subscribed or channel.in_stasis:
            await self._emit(channel.app, kind, channel=channel.to_json(), **fields)

    def _control(self, request: web.Request) -> FakeChannel | web.Response:
        """find_control + channel_state_invalid from resource_channels.c."""
        channel = self.channels.get(request.match_info["id"])
        if channel is None:
            return error(404, "Channel not found")
        if not channel.in_stasis:
            return error(409, "Channel not in Stasis application")
        if channel.state in ("Down", "Rsrved", "Ringing"):
            return error(412, "Channel in invalid state")
        return channel

    async def _set_state(self, channel: FakeChannel, state: str) -> None:
        channel.state = state
        await self._channel_event(channel, "ChannelStateChange")

    async def _enter_stasis(self, channel: FakeChannel, args: list[str] | None = None) -> None:
        channel.in_stasis, channel.stasis_args = True, list(args or [])
        await self._emit(channel.app, "StasisStart", args=channel.stasis_args, channel=channel.to_json())

    async def _leave_stasis(self, channel: FakeChannel) -> None:
        for members in self.bridges.values():
            if channel.id in members:
                members.remove(channel.id)
                channel.variables["BRIDGEPEER"] = ""
        if channel.in_stasis:
            channel.in_stasis = False
            await self._emit(channel.app, "StasisEnd", channel=channel.to_json())

    async def _destroy(self, channel: FakeChannel, cause: int) -> None:
        if self.channels.pop(channel.id, None) is None:
            return
        await self._leave_stasis(channel)
        text = CAUSE_TEXT.get(cause, "Unknown")
        await self._channel_event(channel, "ChannelDestroyed", cause=cause, cause_txt=text)

    async def _media_answers(self, dial: MediaDial) -> bool:
        """Asterisk connects to the bridge's media socket; False when the hook refused it."""
        if self.on_answer is not None:
            try:
                result = self.on_answer(dial)
                if inspect.isawaitable(result):
                    await result
            except Exception:
                return False
        return True

    # --- events socket ------------------------------------------------------------------------------

    async def _events(self, request: web.Request) -> web.StreamResponse:
        query = self._params(request, {"app", "subscribeAll"}, {"app"})
        if self.refuse_events:
            return error(503, "Service Unavailable")
        ws = web.WebSocketResponse(protocols=("ari",))
        await ws.prepare(request)
        self.connections += 1
        self._sockets.append(ws)
        for app in query["app"].split(","):
            previous = self.consumers.get(app)
            self.consumers[app] = ws
            if previous is not None and not previous.closed:
                replaced = {"type": "ApplicationReplaced", "timestamp": now(), "application": app}
                await previous.send_str(json.dumps({**replaced, "asterisk_id": self.asterisk_id}))
        async for message in ws:
            if message.type is WSMsgType.ERROR:
                break
        for app, consumer in list(self.consumers.items()):
            if consumer is ws:
                del self.consumers[app]
        return ws

    # --- channels -----------------------------------------------------------------------------------

    async def _list(self, request: web.Request) -> web.Response:
        self._params(request, set())
        return web.json_response([c.to_json() for c in self.channels.values()])

    async def _get(self, request: web.Request) -> web.Response:
        channel = self.channels.get(request.match_info["id"])
        return error(404, "Channel not found") if channel is None else web.json_response(channel.to_json())

    def _new_channel(self, channel_id: str | None, name: str, app: str, request: web.Request) -> FakeChannel:
        channel_id = channel_id or f"1767225600.{next(self._ids)}"
        if channel_id in self.channels:
            message = json.dumps({"message": "Channel with given unique ID already exists"})
            raise web.HTTPConflict(text=message, content_type="application/json")
        channel = FakeChannel(channel_id, name, app=app, created=now())
        set_variables(channel, body_variables(request[REQUEST_BODY]))
        self.channels[channel_id] = channel
        return channel

    async def _originate(self, request: web.Request) -> web.Response:
        allowed = {"endpoint", "extension", "context", "priority", "label", "app", "appArgs", "callerId"}
        allowed |= {"timeout", "channelId", "otherChannelId", "originator", "formats"}
        query = self._params(request, allowed, {"endpoint"})
        if query.get("app") and (query.get("extension") or query.get("context")):
            return error(400, "app is mutually exclusive with extension/context")
        if not query.get("app") and not query.get("extension"):
            return error(400, "Application or extension must be specified")
        try:
            int(query.get("timeout", "30"))
        except ValueError:
            return error(400, "timeout must be an integer")
        tech, _, resource = query["endpoint"].partition("/")
        if not tech or not resource:
            return error(400, "Invalid endpoint specified")
        name = f"{tech}/{resource.split('@')[-1]}-{next(self._ids):08x}"
        channel = self._new_channel(query.get("channelId"), name, query.get("app", ""), request)
        if query.get("callerId"):  # ast_set_callerid plus the connected line (ari_channels_handle_originate)
            number, caller_name = parse_caller_id(query["callerId"])
            channel.set_caller(number, caller_name)
            channel.connected, channel.connected_name = number, caller_name
        number = resource.split("@")[0]
        self._spawn(self._run_script(channel, self.scripts.get(number, self.default_script)))
        return web.json_response(channel.to_json())

    async def _run_script(self, channel: FakeChannel, script: Script) -> None:
        await asyncio.sleep(0)  # after the originate response, as in Asterisk's dial thread
        peer = channel.to_json

        async def dial(status: str) -> None:
            await self._emit(channel.app, "Dial", peer=peer(), dialstring=channel.name, dialstatus=status)

        if script in (Script.BUSY, Script.CONGESTION):
            await dial(script.value.upper())
            await self._destroy(channel, 17 if script is Script.BUSY else 34)
            return
        await self._set_state(channel, "Ringing")
        await dial("RINGING")
        if script in (Script.NO_ANSWER, Script.REJECT):
            await dial("NOANSWER")
            await self._destroy(channel, 19 if script is Script.NO_ANSWER else 21)
        elif script is Script.TIMEOUT:
            await self._destroy(channel, 0)
        elif script is Script.DROP_THEN_ANSWER:
            await self.drop_events()
            channel.state, channel.in_stasis = "Up", True  # no consumer: these events are lost
        elif script is Script.ANSWER and channel.id in self.channels:
            await self._set_state(channel, "Up")
            await dial("ANSWER")
            await self._enter_stasis(channel)

    async def _external_media(self, request: web.Request) -> web.Response:
        allowed = {"app", "external_host", "format", "encapsulation", "transport", "connection_type"}
        allowed |= {"direction", "data", "transport_data", "channelId", "variables"}
        query = self._params(request, allowed, {"app", "format"})
        kind = (query.get("encapsulation", "rtp"), query.get("transport", "udp"))
        if kind == ("none", "websocket"):
            mode = query.get("connection_type", "client")
            if mode not in ("client", "server") or (mode == "client" and not query.get("external_host")):
                return error(400, "client mode needs external_host (a websocket_client.conf section)")
            host, transport_data = query.get("external_host", "INCOMING"), query.get("transport_data", "")
            name, args = f"WebSocket/{host}/0x7f00{next(self._ids):08x}", []
            own = {"MEDIA_WEBSOCKET_CONNECTION_ID": host, "DIALSTRING": f"{host}/{transport_data}"}
        elif kind == ("audiosocket", "tcp"):  # chan_audiosocket: `data` is the call's UUID
            host, data = query.get("external_host", ""), query.get("data", "")
            if not _HOST_PORT.fullmatch(host):
                return error(400, "external_host must be host:port")
            try:
                uuid.UUID(data)
            except ValueError:
                return error(400, "data must be a UUID for audiosocket")
            if not query["format"].startswith("slin"):  # stricter: Asterisk would mislabel the audio
                return error(400, "AudioSocket carries signed linear only")
            name, args = f"AudioSocket/{host}-{data}", [data]
            own = {"AUDIOSOCKET_UUID": data, "AUDIOSOCKET_SERVICE": host}
        else:
            return error(501, f"encapsulation/transport {kind} is not faked")
        channel = self._new_channel(query.get("channelId"), name, query["app"], request)
        channel.variables |= own
        if kind[0] == "none":
            options = websocket_options(query.get("transport_data", ""))
            dial = MediaDial(
                channel.id, "websocket", options.get("callId", ""), options, dict(channel.variables)
            )
        else:
            dial = MediaDial(channel.id, "audiosocket", query["data"], {}, dict(channel.variables))
        self._spawn(self._connect_media(channel, dial, args))
        return web.json_response({**channel.to_json(), "channelvars": dict(channel.variables)})

    async def _connect_media(self, channel: FakeChannel, dial: MediaDial, args: list[str]) -> None:
        await asyncio.sleep(0)
        if await self._media_answers(dial):
            if channel.id in self.channels:
                await self._set_state(channel, "Up")
                await self._enter_stasis(channel, args)
        else:
            await self._destroy(channel, 3)  # the socket's connect failure

    async def _hangup(self, request: web.Request) -> web.Response:
        query = self._params(request, {"reason", "reason_code"})
        channel = self.channels.get(request.match_info["id"])
        if channel is None:
            return error(404, "Channel not found")
        reason = query.get("reason", "normal")
        if reason not in HANGUP_REASONS:
            return error(400, "Invalid reason for hangup provided")
        self._spawn(self._destroy(channel, HANGUP_REASONS[reason]))
        return web.Response(status=204)

    async def _answer(self, request: web.Request) -> web.Response:
        self._params(request, set())
        channel = self._control(request)
        if isinstance(channel, web.Response):
            return channel
        if channel.state != "Up":
            await self._set_state(channel, "Up")
        return web.Response(status=204)

    async def _continue(self, request: web.Request) -> web.Response:
        query = self._params(request, {"context", "extension", "priority", "label"})
        channel = self._control(request)
        if isinstance(channel, web.Response):
            return channel
        channel.context = query.get("context", channel.context)
        channel.exten = query.get("extension", "s")
        await self._leave_stasis(channel)
        if channel.context in self.media_contexts:
            self._spawn(self._dialplan_media(channel))
        elif channel.context == self.amd_context:
            self._spawn(self._run_amd(channel))
        return web.Response(status=204)

    async def _run_amd(self, channel: FakeChannel) -> None:
        """[bridge-amd]: AMD(), then back into the app with `Stasis(<app>,amd,${AMDSTATUS},${AMDCAUSE})`;
        a callee that hangs up during AMD never gets there."""
        await asyncio.sleep(0)
        status, cause = self.amd_results.get(channel.id, self.default_amd)
        if channel.id not in self.channels:
            return
        if status == "HANGUP":
            await self._destroy(channel, 16)
        else:
            await self._enter_stasis(channel, ["amd", status, cause])

    async def _dialplan_media(self, channel: FakeChannel) -> None:
        """The media context `Dial`s WebSocket/..: the media socket opens; a refusal hangs the call up."""
        dial = MediaDial(channel.id, "websocket", channel.id, {}, dict(channel.variables))
        if not await self._media_answers(dial):
            await self._destroy(channel, 3)

    async def _redirect(self, request: web.Request) -> web.Response:
        query = self._params(request, {"endpoint"})
        channel = self._control(request)
        if isinstance(channel, web.Response):
            return channel
        if not query.get("endpoint"):
            return error(400, "Required parameter 'endpoint' not provided.")
        if query["endpoint"].split("/")[0].lower() != channel.name.split("/")[0].lower():
            return error(422, "Endpoint technology does not match channel technology")
        await self._leave_stasis(channel)
        return web.Response(status=204)

    async def _dtmf(self, request: web.Request) -> web.Response:
        query = self._params(request, {"dtmf", "before", "between", "duration", "after"})
        channel = self._control(request)
        if isinstance(channel, web.Response):
            return channel
        if not query.get("dtmf"):
            return error(400, "DTMF is required")
        if not all(query.get(k, "0").isdigit() for k in ("before", "between", "duration", "after")):
            return error(400, "DTMF timings must be integers")
        channel.dtmf_sent.append(query["dtmf"])
        return web.Response(status=204)

    async def _get_variable(self, request: web.Request) -> web.Response:
        query = self._params(request, {"variable"}, {"variable"})
        channel = self.channels.get(request.match_info["id"])  # any channel: no Stasis needed
        if channel is None:
            return error(404, "Provided channel was not found")
        if query["variable"] not in channel.variables:
            return error(404, "Provided variable was not found")
        return web.json_response({"value": channel.variables[query["variable"]]})

    async def _set_variable(self, request: web.Request) -> web.Response:
        query = self._params(request, {"variable", "value"}, {"variable"})
        channel = self._control(request)
        if isinstance(channel, web.Response):
            return channel
        if set_variables(channel, {query["variable"]: query.get("value", "")}):
            await self._channel_event(channel, "ChannelCallerId", caller_presentation=0)
        return web.Response(status=204)

    # --- bridges ------------------------------------------------------------------------------------

    async def _create_bridge(self, request: web.Request) -> web.Response:
        query = self._params(request, {"type", "bridgeId", "name"})
        types = set(query.get("type", "mixing").split(","))
        if not types <= BRIDGE_TYPES:
            return error(400, f"Invalid bridge type {sorted(types - BRIDGE_TYPES)}")
        bridge_id = query.get("bridgeId") or f"bridge-{next(self._ids)}"
        if bridge_id in self.bridges:
            return error(409, "Bridge with given ID already exists")
        self.bridges[bridge_id] = []
        return web.json_response(self._bridge_json(bridge_id))

    def _bridge_json(self, bridge_id: str) -> dict[str, Any]:
        kind = {"technology": "simple_bridge", "bridge_type": "mixing", "bridge_class": "stasis"}
        return {"id": bridge_id, **kind, "creator": "Stasis", "name": "", "channels": self.bridges[bridge_id]}

    async def _add_channel(self, request: web.Request) -> web.Response:
        query = self._params(
            request, {"channel", "role", "absorbDTMF", "mute", "inhibitConnectedLineUpdates"}, {"channel"}
        )
        bridge_id = request.match_info["id"]
        members = self.bridges.get(bridge_id)
        if members is None:
            return error(404, "Bridge not found")
        wanted = [self.channels.get(cid) for cid in query["channel"].split(",")]
        joining = [c for c in wanted if c is not None]
        if len(joining) != len(wanted):
            return error(400, "Channel not found")
        if any(not c.in_stasis for c in joining):
            return error(422, "Channel not in Stasis application")
        for channel in joining:
            members.append(channel.id)
            if query.get("inhibitConnectedLineUpdates") == "true":  # its identity is not shown to the others
                self._inhibited.add(channel.id)
            await self._channel_event(channel, "ChannelEnteredBridge", bridge=self._bridge_json(bridge_id))
        if len(members) == 2:  # two parties: each side's caller id becomes the other's connected line
            first, second = (self.channels[cid] for cid in members)
            for channel, peer in ((first, second), (second, first)):
                channel.variables["BRIDGEPEER"] = peer.name
                if peer.id not in self._inhibited and channel.connect_to(peer):
                    await self._channel_event(channel, "ChannelConnectedLine")
        return web.Response(status=204)

    async def _destroy_bridge(self, request: web.Request) -> web.Response:
        self._params(request, set())
        if self.bridges.pop(request.match_info["id"], None) is None:
            return error(404, "Bridge not found")
        return web.Response(status=204)
