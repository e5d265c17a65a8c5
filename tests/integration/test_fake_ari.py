"""The fake ARI server itself: as strict as Asterisk where a client could rely on leniency, and a
faithful model of the caller-id effect the controller's fix is for."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import aiohttp
import pytest

from tests.fakes.ari_server import FakeAriServer, FakeChannel
from tests.integration.ari_support import AUTH, PASSWORD, wait_until

AUDIOSOCKET_UUID = "5a1c2f0e-3b4d-4e6f-8a9b-0c1d2e3f4a5b"


@pytest.fixture
async def fake() -> AsyncIterator[FakeAriServer]:
    async with FakeAriServer(password=PASSWORD) as server:
        yield server


async def test_fake_ari_is_strict(fake: FakeAriServer) -> None:
    base = fake.url + "/ari"
    async with aiohttp.ClientSession() as anonymous:
        async with anonymous.get(base + "/channels") as response:
            assert response.status == 401
            assert response.headers["WWW-Authenticate"] == 'Basic realm="Asterisk REST Interface"'
        async with anonymous.get(base + "/channels", params={"api_key": f"bridge:{PASSWORD}"}) as response:
            assert response.status == 200
    async with aiohttp.ClientSession(headers=AUTH) as session:

        async def status(method: str, path: str, **kwargs: Any) -> int:
            async with session.request(method, base + path, **kwargs) as response:
                return response.status

        assert await status("GET", "/channels/") == 404
        assert await status("POST", "/channels", params={"app": "bridge"}) == 400  # no endpoint
        both = {"endpoint": "PJSIP/1@trunk", "app": "bridge", "context": "x"}
        assert await status("POST", "/channels", params=both) == 400
        assert (
            await status(
                "POST", "/channels", params={"endpoint": "PJSIP/1@trunk", "app": "a", "timeout": "x"}
            )
            == 400
        )
        assert (
            await status("POST", "/channels", params={"endpoint": "PJSIP/1@trunk", "app": "a", "bogus": "1"})
            == 400
        )
        bad_vars = {"variables": {"A": 1}}
        assert (
            await status("POST", "/channels", params={"endpoint": "PJSIP/1@t", "app": "a"}, json=bad_vars)
            == 400
        )
        assert await status("DELETE", "/channels/unknown") == 404
        fake.channels["x"] = FakeChannel("x", "PJSIP/t-1", state="Up")
        assert await status("DELETE", "/channels/x", params={"reason": "whatever"}) == 400
        assert await status("POST", "/channels/x/dtmf", params={"dtmf": "1"}) == 409
        assert await status("POST", "/channels/x/continue") == 409
        assert await status("POST", "/channels/x/redirect", params={"endpoint": "PJSIP/2"}) == 409
        assert await status("POST", "/channels/x/variable", params={"variable": "A", "value": "1"}) == 409
        assert await status("GET", "/channels/x/variable", params={"variable": "A"}) == 404
        fake.channels["x"].in_stasis = True
        assert await status("POST", "/channels/x/redirect", params={"endpoint": "SIP/2"}) == 422
        fake.channels["x"].state = "Ringing"
        assert await status("POST", "/channels/x/dtmf", params={"dtmf": "1"}) == 412
        fake.channels["x"].state = "Ring"  # an inbound channel in Stasis before answer
        assert await status("POST", "/channels/x/answer") == 204
        assert fake.channels["x"].state == "Up"
        audiosocket = {
            "app": "bridge",
            "format": "slin16",
            "encapsulation": "audiosocket",
            "transport": "tcp",
        }
        for wrong in (
            {"external_host": "127.0.0.1:9092", "data": "not-a-uuid"},
            {"external_host": "bridge_media", "data": AUDIOSOCKET_UUID},
            {"external_host": "127.0.0.1:9092", "data": AUDIOSOCKET_UUID, "format": "ulaw"},
        ):
            assert await status("POST", "/channels/externalMedia", params={**audiosocket, **wrong}) == 400
        rtp = {"app": "bridge", "format": "ulaw", "external_host": "127.0.0.1:4000"}
        assert await status("POST", "/channels/externalMedia", params=rtp) == 501
        unknown_function = {"variables": {"CALLERID(all)": "x"}}
        assert (
            await status(
                "POST", "/channels", params={"endpoint": "PJSIP/1@t", "app": "a"}, json=unknown_function
            )
            == 400
        )


async def test_fake_blanks_the_connected_line_of_a_media_channel_without_caller_id(
    fake: FakeAriServer,
) -> None:
    """The fake models what the caller-id fix is for (captures: ari_inbound_stasis A and B): a media
    channel without a caller id blanks the caller's connected line; one with the caller's own changes
    nothing on the caller."""
    base = fake.url + "/ari"
    async with (
        aiohttp.ClientSession(headers=AUTH) as session,
        session.ws_connect(base + "/events", params={"app": "bridge"}),
    ):
        await wait_until(lambda: "bridge" in fake.consumers, "consumer registered")

        async def bridged(variables: dict[str, str]) -> FakeChannel:
            caller = await fake.stasis_caller("34987654321")
            media_id = f"{caller.id}-media"
            params = {"app": "bridge", "format": "ulaw", "encapsulation": "none", "transport": "websocket"}
            params |= {"external_host": "bridge_media", "channelId": media_id}
            body = {"variables": variables}
            async with session.post(base + "/channels/externalMedia", params=params, json=body) as reply:
                assert reply.status == 200
            await wait_until(lambda: fake.channels[media_id].in_stasis, "media leg in Stasis")
            async with session.post(base + "/bridges", params={"bridgeId": caller.id}) as reply:
                assert reply.status == 200
            add = {"channel": f"{caller.id},{media_id}"}
            async with session.post(base + f"/bridges/{caller.id}/addChannel", params=add) as reply:
                assert reply.status == 204
            return caller

        blank = await bridged({})
        [update] = fake.events_of("ChannelConnectedLine", blank.id)
        assert update["channel"]["connected"] == {"name": "", "number": ""}
        assert update["channel"]["caller"] == {"name": "Alice Caller", "number": "+34600111555"}
        kept = await bridged({"CALLERID(num)": "+34600111555", "CALLERID(name)": "Alice Caller"})
        assert fake.events_of("ChannelConnectedLine", kept.id) == []
        assert (kept.connected, kept.connected_name) == ("+34600111555", "Alice Caller")
