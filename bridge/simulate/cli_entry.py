"""`bridge simulate-call`: a telephony engineer's wiring test, playing PBX plus Asterisk.

Exit codes: 0 the call completed and Asterisk would have had nothing to complain about; 1 errors were
counted (see the summary); 2 the call could not be set up (bad options, webhook refused, socket
refused, upgrade too slow), with a one-line message on stderr and no traceback.
"""

from __future__ import annotations

import argparse
import sys
import uuid
import wave
from pathlib import Path

from bridge.simulate.call import run_simulated_call
from bridge.simulate.options import AudioSource, SimulatedCallOptions
from bridge.simulate.runtime import SimulationConnectError

EXIT_OK = 0
EXIT_ERRORS = 1
EXIT_SETUP = 2


def _dtmf(value: str) -> tuple[float, str]:
    at, sep, digit = value.partition(":")
    try:
        if not sep:
            raise ValueError
        return float(at), digit
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected SECONDS:DIGIT (e.g. 2.5:5), got {value!r}") from None


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Options of `bridge simulate-call`."""
    add = parser.add_argument
    add("--url", default="http://127.0.0.1:8080", help="bridge base URL (default %(default)s)")
    add(
        "--connector-key",
        help="connector API key: the webhook's header and the media socket's Basic password",
    )
    add("--wav", type=Path, metavar="IN", help="caller audio (16-bit WAV, any rate); default: test speech")
    add("--out", type=Path, metavar="OUT", help="write what the caller heard to this WAV file")
    add("--format", default="slin16", choices=["ulaw", "alaw", "slin", "slin16", "slin24"], help="leg format")
    add("--call-id", help="call id (default: a fresh UUID; AudioSocket needs a UUID)")
    add("--caller", default="+15551230001", help="caller number, E.164 (default %(default)s)")
    add("--called", default="+34987654321", help="called number (b_number), E.164 (default %(default)s)")
    add("--seconds", type=float, help="stay on the line this long (default: the audio plus 2 s)")
    add("--transport", default="chan_websocket", choices=["chan_websocket", "audiosocket"])
    add("--control", default="json", choices=["json", "plain"], help="chan_websocket control format")
    add(
        "--plain-variant",
        default="22.10",
        choices=["22.6", "22.7", "22.10"],
        help="Asterisk version for --control plain",
    )
    add(
        "--direction",
        default="both",
        choices=["both", "in", "out"],
        help="chan_websocket media direction d() from the bridge's side (22.9+): out = no caller audio",
    )
    add("--announce-modes", action="store_true", help="MEDIA_START also says passthrough/unbuffered")
    add("--audiosocket-host", default="127.0.0.1")
    add("--audiosocket-port", type=int, default=9092)
    add("--no-webhook", action="store_true", help="skip the PBX's connect webhook")
    add("--terminate-webhook", action="store_true", help="post the terminate webhook after the hangup")
    add(
        "--ws-auth",
        action="store_true",
        help="send HTTP Basic auth on the media socket (the default when --connector-key is given)",
    )
    add(
        "--no-ws-auth",
        action="store_true",
        help="send no credentials on the media socket (a PBX that cannot; see allow_unauthenticated_media)",
    )
    add("--ws-user", default="asterisk", help="Basic auth user name (default %(default)s)")
    add("--wait-for-hangup", action="store_true", help="let the bridge hang up (up to --max-seconds)")
    add("--max-seconds", type=float, default=120.0, help="give up after this long (default %(default)s)")
    add("--dtmf", type=_dtmf, action="append", default=[], metavar="SECONDS:DIGIT", help="press a key")
    add("--json", action="store_true", help="print the summary as one JSON line")


def options_from_args(args: argparse.Namespace) -> SimulatedCallOptions:
    """Raises ValueError with every problem when the options do not make sense together."""
    if args.ws_auth and not args.connector_key:
        raise ValueError("--ws-auth needs --connector-key (it is the Basic auth password)")
    if args.ws_auth and args.no_ws_auth:
        raise ValueError("--ws-auth and --no-ws-auth contradict each other")
    ws_auth = bool(args.connector_key) and not args.no_ws_auth
    return SimulatedCallOptions(
        url=args.url,
        connector_key=args.connector_key,
        transport=args.transport,
        control=args.control,
        plain_variant=args.plain_variant,
        format=args.format,
        call_id=args.call_id or str(uuid.uuid4()),
        caller=args.caller,
        called=args.called,
        audio=AudioSource(wav_path=args.wav),
        seconds=args.seconds,
        send_webhook=not args.no_webhook,
        terminate_webhook=args.terminate_webhook,
        ws_username=args.ws_user if ws_auth else None,
        ws_password=args.connector_key if ws_auth else None,
        ws_auth=ws_auth,
        audiosocket_host=args.audiosocket_host,
        audiosocket_port=args.audiosocket_port,
        wait_for_bridge_hangup=args.wait_for_hangup,
        max_seconds=args.max_seconds,
        dtmf=tuple(args.dtmf),
        direction=args.direction,
        announce_modes=args.announce_modes,
    )


async def run_from_args(args: argparse.Namespace) -> int:
    """Run one simulated call from parsed arguments; returns the process exit code."""
    try:
        opts = options_from_args(args)
    except ValueError as exc:
        print(f"simulate-call: {exc}", file=sys.stderr)
        return EXIT_SETUP
    if args.wav is not None and not args.wav.is_file():
        print(f"simulate-call: no such WAV file: {args.wav}", file=sys.stderr)
        return EXIT_SETUP
    try:
        summary = await run_simulated_call(opts)
    except SimulationConnectError as exc:
        print(f"simulate-call: {exc}", file=sys.stderr)
        return EXIT_SETUP
    except (ValueError, OSError, EOFError, wave.Error) as exc:  # unreadable WAV and the like
        print(f"simulate-call: {exc}", file=sys.stderr)
        return EXIT_SETUP
    if args.out is not None:
        summary.write_wav(args.out)
    print(summary.to_json() if args.json else summary.to_text())
    return EXIT_OK if summary.ok else EXIT_ERRORS
