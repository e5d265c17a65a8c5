"""A fake Asterisk (plus PBX webhook) that places calls against the bridge.

Used by `bridge simulate-call` and by the integration tests and benchmark. It is an independent
implementation of the Asterisk side of chan_websocket and AudioSocket: it must not import
`bridge.asterisk`, so that one misunderstanding of the protocol cannot hide on both ends.
"""

from bridge.simulate.call import run_simulated_call
from bridge.simulate.options import AudioSource, PeerRecord, SimulatedCallOptions
from bridge.simulate.runtime import SimulationConnectError
from bridge.simulate.summary import ArrivalStats, CallSummary, PlayedFrame

__all__ = [
    "ArrivalStats",
    "AudioSource",
    "CallSummary",
    "PeerRecord",
    "PlayedFrame",
    "SimulatedCallOptions",
    "SimulationConnectError",
    "run_simulated_call",
]
