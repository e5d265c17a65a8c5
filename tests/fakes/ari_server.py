"""A strict fake of Asterisk's ARI (REST + events WebSocket) on a loopback port, for controller tests.

It follows res/ari/resource_channels.c where that matters to a client: 404 unknown channel, 409 when an
operation needs Stasis and the channel is not in it, 412 for a channel not yet answered, 409 duplicate
channelId, 400 for bad or unknown parameters (stricter than Asterisk, which ignores unknown ones, so typos
fail tests). Outbound calls follow a per-number `Script`. Every request is recorded for assertions.
"""

from __future__ import annotations

import asyncio
import base64
import inspect
import itertools
import json
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from enum import StrEnum
from typing import Any

from aiohttp import WSMsgType, web

AnswerHook = Callable[[str, dict[str, str]], Awaitable[None] | None]
_HANGUP_REASONS = {"normal": 16, "busy": 17, "congestion": 34, "no_answer": 19, "answered_elsewhere": 26}
_CAUSE_TEXT = {0: "Unknown", 3: "No route to destination", 16: "Normal Clearing", 17: "User busy"}
_CAUSE_TEXT |= {
    19: "No answer",
    21: "Call Rejected",
    26: "Answered elsewhere",
    34: "Circuit/channel congestion",
}
_BRIDGE_TYPES = {"mixing", "holding", "dtmf_events", "proxy_media", "video_sfu", "video_single"}


class Script(StrEnum):
    ANSWER = "answer"  # rings, answers, enters Stasis
    BUSY = "busy"  # Dial BUSY + cause 17
    NO_ANSWER = "no_answer"  # rings, Dial NOANSWER + cause 19
    TIMEOUT = "timeout"  # rings, then main/dial.c's timeout: no Dial event, cause 0
    CONGESTION = "congestion"  # Dial CONGESTION + cause 34
    REJECT = "reject"  # rings, Dial NOANSWER (as dial.c reports it) + cause 21
    RING = "ring"  # rings until hung up
    DROP_THEN_ANSWER = "drop_then_answer"  # rings, drops every events socket, answers while none is up


@dataclass
class RecordedRequest:
    method: str
    path: str
    query: dict[str, str]
    body: Any


@dataclass
class FakeChannel:
    id: str
    name: str
    state: str = "Down"
    app: str = ""  # the Stasis app subscribed to its events
    in_stasis: bool = False
    caller: str = ""
    context: str = "default"
    exten: str = "s"
    variables: dict[str, str] = field(default_factory=dict)
    dtmf_sent: list[str] = field(default_factory=list)
    created: str = ""

    def to_json(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "name": self.name,
            "state": self.state,
            "protocol_id": "",
            "caller": {"name": "", "number": self.caller},
            "connected": {"name": "", "number": ""},
            "accountcode": "",
            "dialplan": {
                "context": self.context,
                "exten": self.exten,
                "priority": 1,
                "app_name": "Stasis" if self.in_stasis else "",
                "app_data": self.app if self.in_stasis else "",
            },
            "creationtime": self.created,
            "language": "en",
        }


def _now() -> str:
    return datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%S.%f")[:-3] + "+0000"


def _error(status: int, message: str) -> web.Response:
    return web.json_response({"message": message}, status=status)


def _bad_request(message: str) -> web.HTTPBadRequest:
    return web.HTTPBadRequest(text=json.dumps({"message": message}), content_type="application/json")


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

    async def drop_events(self) -> None:
        """Close every events socket, as a restarting Asterisk or a broken network would."""
        consumers, self.consumers = list(self.consumers.values()), {}
        for ws in consumers:
            await ws.close()

    def add_inbound_call(self, trunk: FakeChannel, media: FakeChannel) -> None:
        """A dialplan `Dial(WebSocket/..)` call: both legs outside Stasis, bridged to each other."""
        trunk.state = media.state = "Up"
        trunk.variables["BRIDGEPEER"], media.variables["BRIDGEPEER"] = media.name, trunk.name
        self.channels[trunk.id], self.channels[media.id] = trunk, media

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
                return _error(400, "Invalid JSON body")
        query = {k: v for k, v in request.query.items() if k != "api_key"}
        self.requests.append(RecordedRequest(request.method, request.path, query, body))
        if request.path.endswith("/"):
            return _error(404, "Not found")  # Asterisk refuses trailing slashes
        if not self._authorised(request):
            response = _error(401, "Authentication required")
            response.headers["WWW-Authenticate"] = 'Basic realm="Asterisk REST Interface"'
            return response
        if self.read_only and request.method != "GET":
            return _error(403, "Forbidden")
        request["body"] = body
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
            raise _bad_request(f"unknown parameters {sorted(unknown)}")
        missing = {name for name in required if not query.get(name)}
        if missing:
            raise _bad_request(f"missing parameters {sorted(missing)}")
        return query

    def _variables(self, request: web.Request) -> dict[str, str]:
        body = request["body"]
        if body is None:
            return {}
        variables = body.get("variables", {}) if isinstance(body, dict) else None
        if not isinstance(variables, dict) or not all(isinstance(v, str) for v in variables.values()):
            raise _bad_request("Only string values in the 'variables' object allowed")
        return dict(variables)

    def _spawn(self, coro: Awaitable[None]) -> None:
        task: asyncio.Task[None] = asyncio.ensure_future(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _emit(self, app: str, kind: str, **fields: Any) -> None:
        ws = self.consumers.get(app)
        event = {
            "type": kind,
            "timestamp": _now(),
            "application": app,
            "asterisk_id": self.asterisk_id,
            **fields,
        }
        if ws is not None and not ws.closed:
            self.events_sent.append(event)
            await ws.send_str(json.dumps(event))

    def _control(self, request: web.Request) -> FakeChannel | web.Response:
        """find_control + channel_state_invalid from resource_channels.c."""
        channel = self.channels.get(request.match_info["id"])
        if channel is None:
            return _error(404, "Channel not found")
        if not channel.in_stasis:
            return _error(409, "Channel not in Stasis application")
        if channel.state in ("Down", "Rsrved", "Ringing"):
            return _error(412, "Channel in invalid state")
        return channel

    async def _set_state(self, channel: FakeChannel, state: str) -> None:
        channel.state = state
        await self._emit(channel.app, "ChannelStateChange", channel=channel.to_json())

    async def _enter_stasis(self, channel: FakeChannel) -> None:
        channel.in_stasis = True
        await self._emit(channel.app, "StasisStart", args=[], channel=channel.to_json())

    async def _leave_stasis(self, channel: FakeChannel) -> None:
        for members in self.bridges.values():
            if channel.id in members:
                members.remove(channel.id)
        if channel.in_stasis:
            channel.in_stasis = False
            await self._emit(channel.app, "StasisEnd", channel=channel.to_json())

    async def _destroy(self, channel: FakeChannel, cause: int) -> None:
        if self.channels.pop(channel.id, None) is None:
            return
        await self._leave_stasis(channel)
        text = _CAUSE_TEXT.get(cause, "Unknown")
        await self._emit(
            channel.app, "ChannelDestroyed", cause=cause, cause_txt=text, channel=channel.to_json()
        )

    async def _media_answers(self, channel: FakeChannel, call_id: str) -> bool:
        """Asterisk connects to the bridge's media socket; False when the hook refused it."""
        if self.on_answer is not None:
            try:
                result = self.on_answer(call_id, dict(channel.variables))
                if inspect.isawaitable(result):
                    await result
            except Exception:
                return False
        return True

    # --- events socket ------------------------------------------------------------------------------

    async def _events(self, request: web.Request) -> web.StreamResponse:
        query = self._params(request, {"app", "subscribeAll"}, {"app"})
        if self.refuse_events:
            return _error(503, "Service Unavailable")
        ws = web.WebSocketResponse(protocols=("ari",))
        await ws.prepare(request)
        self.connections += 1
        self._sockets.append(ws)
        for app in query["app"].split(","):
            previous = self.consumers.get(app)
            self.consumers[app] = ws
            if previous is not None and not previous.closed:
                replaced = {"type": "ApplicationReplaced", "timestamp": _now(), "application": app}
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
        return _error(404, "Channel not found") if channel is None else web.json_response(channel.to_json())

    def _new_channel(
        self, channel_id: str | None, name: str, app: str, variables: dict[str, str]
    ) -> FakeChannel:
        channel_id = channel_id or f"1767225600.{next(self._ids)}"
        if channel_id in self.channels:
            message = json.dumps({"message": "Channel with given unique ID already exists"})
            raise web.HTTPConflict(text=message, content_type="application/json")
        channel = FakeChannel(channel_id, name, app=app, variables=variables, created=_now())
        self.channels[channel_id] = channel
        return channel

    async def _originate(self, request: web.Request) -> web.Response:
        allowed = {"endpoint", "extension", "context", "priority", "label", "app", "appArgs", "callerId"}
        allowed |= {"timeout", "channelId", "otherChannelId", "originator", "formats"}
        query = self._params(request, allowed, {"endpoint"})
        if query.get("app") and (query.get("extension") or query.get("context")):
            return _error(400, "app is mutually exclusive with extension/context")
        if not query.get("app") and not query.get("extension"):
            return _error(400, "Application or extension must be specified")
        try:
            int(query.get("timeout", "30"))
        except ValueError:
            return _error(400, "timeout must be an integer")
        tech, _, resource = query["endpoint"].partition("/")
        if not tech or not resource:
            return _error(400, "Invalid endpoint specified")
        variables = self._variables(request)
        name = f"{tech}/{resource.split('@')[-1]}-{next(self._ids):08x}"
        channel = self._new_channel(query.get("channelId"), name, query.get("app", ""), variables)
        channel.caller = query.get("callerId", "").strip("<>")
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
        if (query.get("encapsulation"), query.get("transport")) != ("none", "websocket"):
            return _error(501, "only encapsulation=none transport=websocket is faked")
        mode = query.get("connection_type", "client")
        if mode not in ("client", "server") or (mode == "client" and not query.get("external_host")):
            return _error(400, "client mode needs external_host (a websocket_client.conf section)")
        host = query.get("external_host", "INCOMING")
        options = query.get("transport_data", "")
        name = f"WebSocket/{host}/0x7f00{next(self._ids):08x}"
        channel = self._new_channel(query.get("channelId"), name, query["app"], self._variables(request))
        channel.variables |= {"MEDIA_WEBSOCKET_CONNECTION_ID": host, "DIALSTRING": f"{host}/{options}"}
        self._spawn(self._connect_media(channel))
        return web.json_response({**channel.to_json(), "channelvars": dict(channel.variables)})

    async def _connect_media(self, channel: FakeChannel) -> None:
        await asyncio.sleep(0)
        if await self._media_answers(channel, channel.variables.get("BRIDGE_CALL_ID", channel.id)):
            if channel.id in self.channels:
                await self._set_state(channel, "Up")
                await self._enter_stasis(channel)
        else:
            await self._destroy(channel, 3)  # chan_websocket's connect failure

    async def _hangup(self, request: web.Request) -> web.Response:
        query = self._params(request, {"reason", "reason_code"})
        channel = self.channels.get(request.match_info["id"])
        if channel is None:
            return _error(404, "Channel not found")
        reason = query.get("reason", "normal")
        if reason not in _HANGUP_REASONS:
            return _error(400, "Invalid reason for hangup provided")
        self._spawn(self._destroy(channel, _HANGUP_REASONS[reason]))
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
        return web.Response(status=204)

    async def _dialplan_media(self, channel: FakeChannel) -> None:
        """The media context `Dial`s WebSocket/..: the media socket opens; a refusal hangs the call up."""
        if not await self._media_answers(channel, channel.id):
            await self._destroy(channel, 3)

    async def _redirect(self, request: web.Request) -> web.Response:
        query = self._params(request, {"endpoint"})
        channel = self._control(request)
        if isinstance(channel, web.Response):
            return channel
        if not query.get("endpoint"):
            return _error(400, "Required parameter 'endpoint' not provided.")
        if query["endpoint"].split("/")[0].lower() != channel.name.split("/")[0].lower():
            return _error(422, "Endpoint technology does not match channel technology")
        await self._leave_stasis(channel)
        return web.Response(status=204)

    async def _dtmf(self, request: web.Request) -> web.Response:
        query = self._params(request, {"dtmf", "before", "between", "duration", "after"})
        channel = self._control(request)
        if isinstance(channel, web.Response):
            return channel
        if not query.get("dtmf"):
            return _error(400, "DTMF is required")
        if not all(query.get(k, "0").isdigit() for k in ("before", "between", "duration", "after")):
            return _error(400, "DTMF timings must be integers")
        channel.dtmf_sent.append(query["dtmf"])
        return web.Response(status=204)

    async def _get_variable(self, request: web.Request) -> web.Response:
        query = self._params(request, {"variable"}, {"variable"})
        channel = self.channels.get(request.match_info["id"])  # any channel: no Stasis needed
        if channel is None:
            return _error(404, "Provided channel was not found")
        if query["variable"] not in channel.variables:
            return _error(404, "Provided variable was not found")
        return web.json_response({"value": channel.variables[query["variable"]]})

    async def _set_variable(self, request: web.Request) -> web.Response:
        query = self._params(request, {"variable", "value"}, {"variable"})
        channel = self._control(request)
        if isinstance(channel, web.Response):
            return channel
        channel.variables[query["variable"]] = query.get("value", "")
        return web.Response(status=204)

    # --- bridges ------------------------------------------------------------------------------------

    async def _create_bridge(self, request: web.Request) -> web.Response:
        query = self._params(request, {"type", "bridgeId", "name"})
        types = set(query.get("type", "mixing").split(","))
        if not types <= _BRIDGE_TYPES:
            return _error(400, f"Invalid bridge type {sorted(types - _BRIDGE_TYPES)}")
        bridge_id = query.get("bridgeId") or f"bridge-{next(self._ids)}"
        if bridge_id in self.bridges:
            return _error(409, "Bridge with given ID already exists")
        self.bridges[bridge_id] = []
        return web.json_response(
            {
                "id": bridge_id,
                "technology": "simple_bridge",
                "bridge_type": "mixing",
                "bridge_class": "stasis",
                "creator": "Stasis",
                "name": "",
                "channels": [],
            }
        )

    async def _add_channel(self, request: web.Request) -> web.Response:
        query = self._params(
            request, {"channel", "role", "absorbDTMF", "mute", "inhibitConnectedLineUpdates"}, {"channel"}
        )
        members = self.bridges.get(request.match_info["id"])
        if members is None:
            return _error(404, "Bridge not found")
        wanted = [self.channels.get(cid) for cid in query["channel"].split(",")]
        if any(c is None for c in wanted):
            return _error(400, "Channel not found")
        if any(c is not None and not c.in_stasis for c in wanted):
            return _error(422, "Channel not in Stasis application")
        members.extend(c.id for c in wanted if c is not None)
        return web.Response(status=204)

    async def _destroy_bridge(self, request: web.Request) -> web.Response:
        self._params(request, set())
        if self.bridges.pop(request.match_info["id"], None) is None:
            return _error(404, "Bridge not found")
        return web.Response(status=204)
