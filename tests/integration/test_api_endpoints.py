"""The company endpoints, the VoIP webhook and health, with each error status the contract lists."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import Any

import pytest

from bridge.app import Services
from bridge.session.state import CallState, EndedBy
from bridge.simulate import SimulatedCallOptions, run_simulated_call
from bridge.simulate.options import AudioSource
from tests.conftest import ApiFactory
from tests.helpers import ACME_KEY, CONNECTOR_KEY, GLOBEX_PHONE, utterances

CONNECTOR = {"x-connector-api-key": CONNECTOR_KEY}
ACME = {"X-API-Key": ACME_KEY}


def webhook(**overrides: Any) -> dict[str, Any]:
    body: dict[str, Any] = {
        "callId": "call-1",
        "event": "connect",
        "callerPhone": "+34600111222",
        "callerName": "Ana",
        "b_number": "34987654321",
        "websocketUrl": "ws://127.0.0.1:8080/api/real-time-voice-stream",
    }
    body.update(overrides)
    return {k: v for k, v in body.items() if v is not None}


async def test_company_endpoints_shapes(api_client_factory: ApiFactory) -> None:
    client, _ = await api_client_factory()
    emails = await (await client.get("/api/emails", headers=ACME)).json()
    assert emails == {"success": True, "data": {"emails": ["ops@acme.example"]}}
    numbers = await (await client.get("/api/whatsapp/numbers", headers=ACME)).json()
    assert numbers == {
        "success": True,
        "data": {
            "whatsapp_numbers": [
                {
                    "phone_number_id": "123456789",
                    "display_phone_number": "+34 987 654 321",
                    "verified_name": "Acme",
                    "is_active": True,
                    "verification_status": "verified",
                }
            ]
        },
    }


async def test_empty_lists_are_empty_arrays(api_client_factory: ApiFactory) -> None:
    from tests.helpers import GLOBEX_KEY

    client, _ = await api_client_factory()
    body = await (await client.get("/api/whatsapp/numbers", headers={"X-API-Key": GLOBEX_KEY})).json()
    assert body == {"success": True, "data": {"whatsapp_numbers": []}}
    body = await (await client.get("/api/emails", headers={"X-API-Key": GLOBEX_KEY})).json()
    assert body == {"success": True, "data": {"emails": []}}


async def test_unknown_route_and_wrong_method_use_the_envelope(api_client_factory: ApiFactory) -> None:
    client, _ = await api_client_factory()
    response = await client.get("/api/nothing-here", headers=ACME)
    assert response.status == 404
    assert await response.json() == {"success": False, "error": "no such resource", "code": "not_found"}
    response = await client.delete("/api/phones", headers=ACME)
    assert response.status == 405
    assert (await response.json())["code"] == "method_not_allowed"


async def test_connect_creates_one_pending_session(api_client_factory: ApiFactory) -> None:
    client, manager = await api_client_factory()
    response = await client.post("/api/voip/webhook", json=webhook(), headers=CONNECTOR)
    assert response.status == 200
    assert await response.json() == {
        "success": True,
        "data": {"callId": "call-1", "status": "pending", "created": True},
    }
    session = manager.get("call-1")
    assert session is not None
    assert session.state is CallState.PENDING
    assert session.company_id == "acme"
    assert session.info.caller == "+34600111222"
    assert session.info.caller_name == "Ana"

    # A call id is used once: a repeated connect is refused and the first answer stands.
    again = await client.post("/api/voip/webhook", json=webhook(callerName="Eve"), headers=CONNECTOR)
    assert again.status == 409
    assert (await again.json())["code"] == "duplicate_call"
    assert manager.get("call-1") is session
    assert session.info.caller_name == "Ana"
    assert manager.capacity().active_calls == 1


async def test_company_from_company_id_and_caller_number_alias(api_client_factory: ApiFactory) -> None:
    client, manager = await api_client_factory()
    body = webhook(callId="c-2", b_number=None, companyId="acme", callerPhone=None, caller_number="+34600")
    response = await client.post("/api/voip/webhook", json=body, headers=CONNECTOR)
    assert response.status == 200
    session = manager.get("c-2")
    assert session is not None
    assert session.info.caller == "+34600"


async def test_same_call_id_from_another_company_conflicts(api_client_factory: ApiFactory) -> None:
    client, _ = await api_client_factory()
    await client.post("/api/voip/webhook", json=webhook(), headers=CONNECTOR)
    other = webhook(b_number=GLOBEX_PHONE, callerPhone="+15551234567")
    response = await client.post("/api/voip/webhook", json=other, headers=CONNECTOR)
    assert response.status == 409
    assert (await response.json())["code"] == "duplicate_call"


@pytest.mark.parametrize(
    ("body", "fragment"),
    [
        (webhook(websocketUrl=None), "websocketUrl: Field required"),
        (webhook(callerPhone=None), "callerPhone (or caller_number) is required"),
        (webhook(b_number=None), "b_number (or companyId) is required"),
        (webhook(callId=123), "callId: Input should be a valid string"),
        (webhook(callId="bad id/with spaces"), "callId: String should match pattern"),
        (webhook(event="ring"), "event: must be one of 'connect', 'terminate'"),
        (webhook(websocketUrl="http://x/"), "websocketUrl: must be a ws:// or wss:// URL"),
        ({"callId": "x"}, "event: Field required"),
    ],
)
async def test_webhook_validation_names_the_field(
    api_client_factory: ApiFactory, body: dict[str, Any], fragment: str
) -> None:
    client, manager = await api_client_factory()
    response = await client.post("/api/voip/webhook", json=body, headers=CONNECTOR)
    assert response.status == 400
    payload = await response.json()
    assert payload["success"] is False
    assert payload["code"] == "validation_error"
    assert fragment in payload["error"]
    assert manager.capacity().active_calls == 0


@pytest.mark.parametrize("raw", [b"{not json", b"", b"[1,2]", b"\xff\xfe", b"null"])
async def test_malformed_json_is_400(api_client_factory: ApiFactory, raw: bytes) -> None:
    client, _ = await api_client_factory()
    response = await client.post(
        "/api/voip/webhook", data=raw, headers={**CONNECTOR, "Content-Type": "application/json"}
    )
    assert response.status == 400
    assert (await response.json())["code"] == "invalid_json"


async def test_oversized_body_is_413(api_client_factory: ApiFactory) -> None:
    client, _ = await api_client_factory()
    huge = webhook(callerName="x" * 100_000)
    response = await client.post("/api/voip/webhook", json=huge, headers=CONNECTOR)
    assert response.status == 413
    assert (await response.json())["code"] == "payload_too_large"


async def test_unknown_b_number_is_404(api_client_factory: ApiFactory) -> None:
    client, _ = await api_client_factory()
    response = await client.post(
        "/api/voip/webhook", json=webhook(b_number="+10000000000"), headers=CONNECTOR
    )
    assert response.status == 404
    assert (await response.json())["code"] == "unknown_number"
    response = await client.post(
        "/api/voip/webhook", json=webhook(companyId="nope", b_number=None), headers=CONNECTOR
    )
    assert response.status == 404
    assert (await response.json())["code"] == "unknown_company"


async def test_caller_not_allowed_is_403(api_client_factory: ApiFactory) -> None:
    client, manager = await api_client_factory()
    body = webhook(b_number=GLOBEX_PHONE, callerPhone="+34600111222")
    response = await client.post("/api/voip/webhook", json=body, headers=CONNECTOR)
    assert response.status == 403
    assert (await response.json())["code"] == "caller_not_allowed"
    assert manager.capacity().active_calls == 0
    # The allowed caller, written without '+', gets through.
    allowed = webhook(b_number=GLOBEX_PHONE, callerPhone="15551234567")
    assert (await client.post("/api/voip/webhook", json=allowed, headers=CONNECTOR)).status == 200


async def test_at_capacity_is_503_and_fleet_shows_no_room(api_client_factory: ApiFactory) -> None:
    client, _ = await api_client_factory(max_calls=2)
    for index in range(2):
        ok = await client.post("/api/voip/webhook", json=webhook(callId=f"c{index}"), headers=CONNECTOR)
        assert ok.status == 200
    fleet = await (await client.get("/health/fleet")).json()
    assert fleet == {"max_calls": 2, "active_calls": 2, "available": 0, "draining": False}
    response = await client.post("/api/voip/webhook", json=webhook(callId="c9"), headers=CONNECTOR)
    assert response.status == 503
    assert (await response.json())["code"] == "at_capacity"
    # A repeat of an admitted call is refused as a duplicate, not counted against capacity.
    again = await client.post("/api/voip/webhook", json=webhook(callId="c0"), headers=CONNECTOR)
    assert again.status == 409
    assert response.headers["Retry-After"] == "5"
    assert "Retry-After" not in again.headers


async def test_pending_session_expires_after_ttl(api_client_factory: ApiFactory) -> None:
    client, manager = await api_client_factory(pending_ttl=0.2)
    await client.post("/api/voip/webhook", json=webhook(), headers=CONNECTOR)
    session = manager.get("call-1")
    assert session is not None
    await asyncio.wait_for(session.ended.wait(), timeout=5)
    assert manager.get("call-1") is None
    assert session.state is CallState.FAILED
    assert session.error_code == "media_timeout"
    assert session.disconnected_by is EndedBy.TIMEOUT
    fleet = await (await client.get("/health/fleet")).json()
    assert fleet["active_calls"] == 0


async def test_terminate_ends_the_call_and_is_idempotent(api_client_factory: ApiFactory) -> None:
    client, manager = await api_client_factory()
    await client.post("/api/voip/webhook", json=webhook(), headers=CONNECTOR)
    session = manager.get("call-1")
    assert session is not None
    terminate = webhook(event="terminate", websocketUrl=None)
    response = await client.post("/api/voip/webhook", json=terminate, headers=CONNECTOR)
    assert response.status == 200
    assert (await response.json())["data"] == {"callId": "call-1", "status": "ended", "created": False}
    assert session.state is CallState.ENDED
    assert session.disconnected_by is EndedBy.CALLER
    assert manager.get("call-1") is None
    again = await client.post("/api/voip/webhook", json=terminate, headers=CONNECTOR)
    assert again.status == 200
    assert (await again.json())["data"] == {"callId": "call-1", "status": "unknown", "created": False}


async def test_terminate_cannot_end_another_companys_call(api_client_factory: ApiFactory) -> None:
    client, manager = await api_client_factory()
    await client.post("/api/voip/webhook", json=webhook(), headers=CONNECTOR)
    other = webhook(event="terminate", websocketUrl=None, b_number=GLOBEX_PHONE)
    response = await client.post("/api/voip/webhook", json=other, headers=CONNECTOR)
    assert (await response.json())["data"]["status"] == "unknown"
    session = manager.get("call-1")
    assert session is not None
    assert session.state is CallState.PENDING


def metric_samples(text: str) -> dict[str, float]:
    """Every sample of a Prometheus text exposition, by name with its labels as written."""
    samples = (line.rsplit(" ", 1) for line in text.splitlines() if line and not line.startswith("#"))
    return {name: float(value) for name, value in samples}


async def test_health_and_metrics(api_client_factory: ApiFactory) -> None:
    client, _ = await api_client_factory()
    assert await (await client.get("/health")).json() == {
        "status": "ok",
        "asterisk": "disabled",
        "config": {"last_reload": None, "last_reload_at": None, "problems": 0},
        "node_id": None,  # no [cluster]: one process, no fleet
    }
    await client.post("/api/voip/webhook", json=webhook(), headers=CONNECTOR)
    metrics = await client.get("/metrics")
    assert metrics.headers["Content-Type"].startswith("text/plain; version=0.0.4")
    text = await metrics.text()
    assert "# TYPE bridge_calls_finished_total counter" in text
    assert "_created" not in text  # prometheus-client's extra series stay out: the names are as they were
    samples = metric_samples(text)
    assert samples["bridge_calls_active"] == 1
    assert samples["bridge_first_audio_seconds_count"] == 0
    assert samples["bridge_config_reload_failures_total"] == 0
    assert samples["bridge_config_last_reload_success"] == 1
    # The PBX hangs up before any media: counted by who ended it, with no media and no duration.
    await client.post(
        "/api/voip/webhook", json=webhook(event="terminate", websocketUrl=None), headers=CONNECTOR
    )
    samples = metric_samples(await (await client.get("/metrics")).text())
    assert samples["bridge_calls_active"] == 0
    assert samples['bridge_calls_finished_total{reason="caller",status="ended"}'] == 1
    assert samples['bridge_media_frames_total{direction="in"}'] == 0
    assert samples["bridge_call_duration_seconds_count"] == 0
    assert samples["bridge_uplink_latency_seconds_count"] == 0


async def test_metrics_after_a_media_call(bridge_factory: Callable[..., Any]) -> None:
    services: Services = await bridge_factory()
    summary = await run_simulated_call(
        SimulatedCallOptions(
            url=f"http://127.0.0.1:{services.http_port}",
            connector_key=CONNECTOR_KEY,
            audio=AudioSource(pcm=utterances(16000, [(0.2, 0.8)]), sample_rate=16000),
            seconds=1.5,
        )
    )
    assert summary.ok, summary.errors
    for _ in range(200):  # the bridge tears the call down after the caller's hangup
        if services.manager.outcomes.total():
            break
        await asyncio.sleep(0.02)
    async with services.http.get(f"http://127.0.0.1:{services.http_port}/metrics") as response:
        samples = metric_samples(await response.text())
    assert samples['bridge_calls_finished_total{reason="caller",status="ended"}'] == 1
    assert samples['bridge_media_frames_total{direction="in"}'] > 0
    assert samples['bridge_media_frames_total{direction="out"}'] > 0
    assert samples["bridge_first_audio_seconds_count"] == 1
    assert samples["bridge_call_duration_seconds_count"] == 1
    assert 0 < samples["bridge_first_audio_seconds_sum"] < 1.0


@pytest.mark.parametrize("transport", ["chan_websocket", "audiosocket"])
async def test_per_direction_latency_after_an_echo_call(
    bridge_factory: Callable[..., Any], transport: str
) -> None:
    services: Services = await bridge_factory(audiosocket={})
    seconds = 2.0
    call: dict[str, Any] = {"transport": transport, "audiosocket_port": services.audiosocket_port}
    summary = await run_simulated_call(
        SimulatedCallOptions(
            url=f"http://127.0.0.1:{services.http_port}",
            connector_key=CONNECTOR_KEY,
            audio=AudioSource(pcm=utterances(8000, [(0.2, 1.6)]), sample_rate=8000),
            format="slin",
            seconds=seconds,
            **call,
        )
    )
    assert summary.ok, summary.errors
    for _ in range(200):
        if services.manager.outcomes.total():
            break
        await asyncio.sleep(0.02)
    async with services.http.get(f"http://127.0.0.1:{services.http_port}/metrics") as response:
        samples = metric_samples(await response.text())
    frames = seconds / 0.02
    # Every caller frame reaches the echo (one observation each); what it played back is observed once per
    # chunk it released (all but its last 200 ms), whatever the leg's framing.
    assert frames * 0.5 <= samples["bridge_uplink_latency_seconds_count"] <= frames * 1.1
    assert 0 < samples["bridge_downlink_latency_seconds_count"] <= frames * 1.1
    for direction in ("uplink", "downlink"):
        count = samples[f"bridge_{direction}_latency_seconds_count"]
        assert samples[f'bridge_{direction}_latency_seconds_bucket{{le="+Inf"}}'] == count
        assert 0 <= samples[f"bridge_{direction}_latency_seconds_sum"] / count < 1.0  # bridge time: < 1 s
        assert samples[f'bridge_{direction}_latency_seconds_bucket{{le="0.25"}}'] > 0
    # The loop-lag probe ran all along (20 times a second) and the loop was never held up for long.
    lag_count = samples["bridge_event_loop_lag_seconds_count"]
    assert lag_count >= seconds * 10
    assert samples['bridge_event_loop_lag_seconds_bucket{le="0.25"}'] == lag_count


async def test_draining_refuses_new_calls(api_client_factory: ApiFactory) -> None:
    client, manager = await api_client_factory()
    await client.post("/api/voip/webhook", json=webhook(), headers=CONNECTOR)
    drain = asyncio.create_task(manager.drain(0.5))
    await asyncio.sleep(0)
    response = await client.post("/api/voip/webhook", json=webhook(callId="late"), headers=CONNECTOR)
    assert response.status == 503
    assert (await response.json())["code"] == "shutting_down"
    assert (await (await client.get("/health/fleet")).json())["available"] == 0
    await drain
    assert manager.capacity().active_calls == 0
