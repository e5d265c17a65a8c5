"""`run_simulated_call`: one call from the PBX's webhook to the hangup, over either transport."""

from __future__ import annotations

import contextlib

from bridge.simulate.audiosocket_peer import AudioSocketCall
from bridge.simulate.options import SimulatedCallOptions
from bridge.simulate.runtime import CallerAudio, SimulationConnectError, post_webhook
from bridge.simulate.summary import CallSummary
from bridge.simulate.ws_peer import WebSocketCall, open_media_socket


async def run_simulated_call(opts: SimulatedCallOptions) -> CallSummary:
    """Place one call against the bridge and return what happened.

    Raises SimulationConnectError when the call cannot be set up (webhook refused, socket refused or
    upgrade rejected/too slow). Everything that goes wrong after that is reported in the summary.
    """
    audio = CallerAudio.load(opts)
    if opts.send_webhook:
        await post_webhook(opts, "connect")
    if opts.transport == "audiosocket":
        summary = await AudioSocketCall(opts, audio).run()
    else:
        ws = await open_media_socket(opts)
        try:
            summary = await WebSocketCall(opts, ws, audio).run()
        finally:
            with contextlib.suppress(Exception):
                await ws.close()
    if opts.terminate_webhook:
        try:
            await post_webhook(opts, "terminate")
        except SimulationConnectError as exc:
            summary.warnings.append(str(exc))
    return summary
