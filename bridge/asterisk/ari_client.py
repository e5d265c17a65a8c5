"""ARI transport: REST requests and the events WebSocket over one aiohttp ClientSession, with health.

The call flows live in `asterisk/ari.py`; this module only talks to Asterisk.

Events socket: reconnected with backoff (0.25 s doubling to 10 s). If another consumer takes the app
(`ApplicationReplaced`), health goes DOWN and we take it back only after the longest backoff, so two
misconfigured daemons alternate slowly instead of fighting in a tight loop. Each time the socket comes
up, `on_connected` runs so the owner can reconcile what it may have missed.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Callable, Mapping
from typing import Any

import aiohttp

from bridge.logging import get_logger
from bridge.session.control import ControlError, ControllerHealth
from bridge.settings import AriSettings

log = get_logger("ari")

EventHandler = Callable[[dict[str, Any]], None]
_STATUS_CODES = {
    401: "permission_denied",
    403: "permission_denied",
    404: "channel_not_found",
    409: "channel_not_in_stasis",
    412: "channel_not_answered",
}


class AriClient:
    def __init__(
        self,
        ari: AriSettings,
        on_event: EventHandler,
        on_connected: Callable[[], None],
        *,
        action_timeout: float = 5.0,
        reconnect_initial: float = 0.25,
        reconnect_max: float = 10.0,
    ) -> None:
        self._ari = ari
        self._on_event = on_event
        self._on_connected = on_connected
        self._action_timeout = action_timeout
        self._backoff = (reconnect_initial, reconnect_max)
        self._base = ari.url.rstrip("/") + "/ari/"
        self._health = ControllerHealth.DOWN
        self._health_logged = False
        self._session: aiohttp.ClientSession | None = None
        self._runner: asyncio.Task[None] | None = None
        self._closing = False

    @property
    def health(self) -> ControllerHealth:
        return self._health

    async def start(self) -> None:
        if self._runner is None:
            # A default header, not BasicAuth (deprecated in aiohttp 3.14); the session only talks to ARI.
            auth = aiohttp.encode_basic_auth(self._ari.username, self._ari.password.get_secret_value())
            self._session = aiohttp.ClientSession(headers={"Authorization": auth})
            self._runner = asyncio.create_task(self._run_events(), name="ari-events")

    async def close(self) -> None:
        self._closing = True
        if self._runner is not None:
            self._runner.cancel()
            await asyncio.gather(self._runner, return_exceptions=True)
        if self._session is not None:
            await self._session.close()
        self._set_health(ControllerHealth.DOWN, "closed")

    async def request(
        self,
        method: str,
        path: str,
        params: Mapping[str, str] | None = None,
        body: Any = None,
        codes: Mapping[int, str] | None = None,
    ) -> Any:
        """One REST call; the decoded JSON body (None when empty). A refusal is a ControlError whose code
        comes from `codes`, then the common ARI statuses."""
        session = self._session
        if session is None or session.closed:
            raise ControlError("the ARI controller is not running", "asterisk_unavailable")
        timeout = aiohttp.ClientTimeout(total=self._action_timeout)
        try:
            async with session.request(
                method, self._base + path, params=params, json=body, timeout=timeout
            ) as response:
                status, text = response.status, await response.text()
        except TimeoutError as exc:
            raise ControlError(f"ARI {method} {path} timed out", "action_timeout") from exc
        except (aiohttp.ClientError, OSError) as exc:
            raise ControlError(f"ARI is unreachable: {exc}", "asterisk_unavailable") from exc
        try:
            data = json.loads(text) if text else None
        except ValueError:
            data = None
        if status < 300:
            return data
        message = data.get("message", "") if isinstance(data, dict) else ""
        code = {**_STATUS_CODES, **(codes or {})}.get(status, "asterisk_error")
        raise ControlError(f"ARI {method} {path}: {status} {message or text[:200]}".rstrip(), code)

    # --- events -------------------------------------------------------------------------------------

    def _set_health(self, health: ControllerHealth, reason: str) -> None:
        # Once per change, plus the first failure while still DOWN (e.g. a 401 at startup), not per retry.
        if health is self._health and self._health_logged:
            return
        self._health, self._health_logged = health, True
        level = {ControllerHealth.OK: log.info, ControllerHealth.DEGRADED: log.warning}.get(health, log.error)
        level("ari_health", health=health.value, reason=reason, url=self._ari.url, app=self._ari.app)

    async def _run_events(self) -> None:
        assert self._session is not None
        initial, longest = self._backoff
        delay, was_up, replaced = initial, False, False
        params = {"app": self._ari.app, "subscribeAll": "false"}
        while not self._closing:
            # Replaced by another consumer stays DOWN until we hold the app again.
            lost = ControllerHealth.DEGRADED if was_up and not replaced else ControllerHealth.DOWN
            try:
                ws = await self._session.ws_connect(
                    self._base + "events", params=params, protocols=("ari",), heartbeat=20.0
                )
            except aiohttp.WSServerHandshakeError as exc:
                refused = exc.status in (401, 403)
                self._set_health(
                    ControllerHealth.DOWN if refused else lost, f"events socket refused: {exc.status}"
                )
            except (aiohttp.ClientError, OSError, TimeoutError) as exc:
                self._set_health(lost, f"cannot reach ARI: {type(exc).__name__}")
            else:
                async with ws:
                    was_up, delay = True, initial
                    self._set_health(ControllerHealth.OK, "events socket connected")
                    self._on_connected()
                    replaced = await self._read_events(ws)
                if self._closing:
                    break
                if replaced:
                    self._set_health(ControllerHealth.DOWN, "another consumer took over the ARI app")
                    delay = longest
                else:
                    self._set_health(ControllerHealth.DEGRADED, "events socket lost")
            await asyncio.sleep(delay)
            delay = min(delay * 2, longest)

    async def _read_events(self, ws: aiohttp.ClientWebSocketResponse) -> bool:
        """Dispatch events until the socket closes; True when another consumer replaced us."""
        async for message in ws:
            if message.type is not aiohttp.WSMsgType.TEXT:
                continue
            try:
                event = json.loads(message.data)
            except ValueError:
                log.warning("ari_bad_event", size=len(message.data))
                continue
            if isinstance(event, dict):
                if event.get("type") == "ApplicationReplaced":
                    return True
                self._on_event(event)
        return False
