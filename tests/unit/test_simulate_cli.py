"""`bridge simulate-call` options and exit codes (0 clean, 1 errors counted, 2 could not set up)."""

from __future__ import annotations

import argparse
import asyncio
import json
import socket
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import pytest
from aiohttp import WSMsgType, web

from bridge.simulate import SimulatedCallOptions
from bridge.simulate.cli_entry import add_arguments, options_from_args, run_from_args
from tests.helpers import serving


def parse(*argv: str) -> argparse.Namespace:
    parser = argparse.ArgumentParser()
    add_arguments(parser)
    return parser.parse_args(argv)


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
    return port  # nothing listens there any more


def test_arguments_map_to_options() -> None:
    args = parse(
        "--url", "http://127.0.0.1:9", "--connector-key", "k", "--format", "ulaw", "--control", "plain",
        "--plain-variant", "22.6", "--dtmf", "1.5:5", "--dtmf", "2:#", "--ws-auth", "--no-webhook",
        "--seconds", "3",
    )  # fmt: skip
    o = options_from_args(args)
    assert (o.format, o.control, o.plain_variant, o.seconds) == ("ulaw", "plain", "22.6", 3.0)
    assert o.dtmf == ((1.5, "5"), (2.0, "#"))
    assert (o.ws_username, o.ws_password, o.send_webhook) == ("asterisk", "k", False)
    assert o.websocket_url == "ws://127.0.0.1:9/api/real-time-voice-stream"


def test_bad_dtmf_argument_is_a_usage_error() -> None:
    with pytest.raises(SystemExit):
        parse("--dtmf", "5")


def test_option_problems_are_all_reported() -> None:
    with pytest.raises(ValueError, match="UUID") as err:
        SimulatedCallOptions(transport="audiosocket", format="ulaw", call_id="not-a-uuid", speed=0)
    assert "signed linear" in str(err.value)
    assert "speed" in str(err.value)
    assert SimulatedCallOptions(url="https://bridge.example/x/").websocket_url == (
        "wss://bridge.example/x/api/real-time-voice-stream"
    )


async def test_refused_connection_exits_2_with_one_line(capsys: pytest.CaptureFixture[str]) -> None:
    port = free_port()
    assert (
        await run_from_args(parse("--url", f"http://127.0.0.1:{port}", "--no-webhook", "--seconds", "1")) == 2
    )
    err = capsys.readouterr().err
    assert err.startswith("simulate-call: cannot connect to ws://127.0.0.1:")
    assert err.count("\n") == 1
    assert "Traceback" not in err
    assert await run_from_args(parse("--url", f"http://127.0.0.1:{port}", "--seconds", "1")) == 2
    assert "connect webhook" in capsys.readouterr().err
    assert await run_from_args(parse("--transport", "audiosocket", "--format", "ulaw")) == 2
    assert "signed linear" in capsys.readouterr().err


@asynccontextmanager
async def tiny_bridge(webhook_status: int = 200) -> AsyncIterator[str]:
    """Plays 3 frames (+1 stray byte when callId is 'bad'), waits for a mark, hangs up."""

    async def webhook(request: web.Request) -> web.Response:
        return web.json_response(
            {"success": webhook_status == 200, "error": "bad key"}, status=webhook_status
        )

    async def media(request: web.Request) -> web.WebSocketResponse:
        ws = web.WebSocketResponse(protocols=("media",), compress=False)
        await ws.prepare(request)
        assert (await ws.receive()).type == WSMsgType.TEXT  # MEDIA_START
        extra = b"\x00" if request.query["callId"] == "bad" else b""
        await ws.send_bytes(b"\x00" * 640 * 3 + extra)
        await ws.send_str('{"command":"MARK_MEDIA","correlation_id":"end"}')
        async for msg in ws:
            if msg.type == WSMsgType.TEXT and json.loads(msg.data)["event"] == "MEDIA_MARK_PROCESSED":
                await ws.send_str('{"command":"HANGUP"}')
        return ws

    app = web.Application()
    app.router.add_post("/api/voip/webhook", webhook)
    app.router.add_get("/api/real-time-voice-stream", media)
    async with serving(app) as port:
        yield f"http://127.0.0.1:{port}"


async def test_exit_0_when_clean_and_1_when_errors(capsys: pytest.CaptureFixture[str]) -> None:
    async with tiny_bridge() as url:
        base = ("--url", url, "--connector-key", "ck", "--seconds", "10", "--json")
        assert await asyncio.wait_for(run_from_args(parse(*base, "--call-id", "good")), 20) == 0
        good = json.loads(capsys.readouterr().out)
        assert await asyncio.wait_for(run_from_args(parse(*base, "--call-id", "bad")), 20) == 1
        bad = json.loads(capsys.readouterr().out)
    assert (good["ok"], good["frames_received"], good["hangup_by"]) == (True, 3, "bridge")
    assert bad["error_counts"] == {"partial_frame_dropped": 1}


async def test_refused_webhook_exits_2(capsys: pytest.CaptureFixture[str]) -> None:
    async with tiny_bridge(webhook_status=401) as url:
        assert await run_from_args(parse("--url", url, "--connector-key", "wrong")) == 2
    err = capsys.readouterr().err
    assert "connect webhook refused: HTTP 401" in err
    assert err.rstrip().endswith("bad key")
