"""What the dialplan tells the bridge about a chan_websocket call, read from MEDIA_START and the media
URI's query. Pure functions.

- The dial options: MEDIA_START `channel_variables` holds `DIALEDPEERNUMBER`, the dial string after
  `WebSocket/` (`bridge_media/c(ulaw)f(json)d(out)v(...)`, captures ws_dtmf_json.jsonl). A `Dial()` has it,
  an ARI externalMedia channel does not; there `BRIDGE_MEDIA_DIRECTION` in the request's `variables` says
  what its `direction` parameter did.
- The media direction (`d()`, 22.9+), from the application's side: `in` = the bridge only receives
  (Asterisk drops what it sends), `out` = it only sends (Asterisk sends it no audio).
- The call's variables for the session: the query (`v()` parameters) first, then `channel_variables`
  (race-free: `v()` is shared by every call of a websocket_client.conf section), names without the `__`
  that `__X` inheritance keeps (`_X` already arrives as `X`), and `amd` from `BRIDGE_AMD_STATUS`, the
  AMDSTATUS the sample's [bridge-outbound] passes both ways.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Final

from bridge.asterisk.chan_websocket import MediaDirection

DIALED_PEER: Final = "DIALEDPEERNUMBER"
DIRECTION_VARIABLE: Final = "BRIDGE_MEDIA_DIRECTION"
CALL_ID_VARIABLE: Final = "BRIDGE_CALL_ID"
AMD_STATUS_VARIABLE: Final = "BRIDGE_AMD_STATUS"
AMD_KEY: Final = "amd"  # the query parameter (`v(...,amd=${AMD_RESULT})`) and the session's key


def dial_options(dialed_peer: str) -> dict[str, str]:
    """The options of a `WebSocket/<connection>/<options>` dial string (without `WebSocket/`): each
    letter, with its parenthesised argument or "" (parentheses nest, as Asterisk's option parser counts
    them). `bridge_media/c(ulaw)nd(out)` -> {"c": "ulaw", "n": "", "d": "out"}."""
    _, _, text = dialed_peer.partition("/")
    options: dict[str, str] = {}
    index = 0
    while index < len(text):
        letter = text[index]
        index += 1
        argument = ""
        if index < len(text) and text[index] == "(":
            depth, start = 1, index + 1
            index = start
            while index < len(text) and depth:
                depth += {"(": 1, ")": -1}.get(text[index], 0)
                index += 1
            argument = text[start : index - 1] if not depth else text[start:]
        if letter.isalpha():
            options[letter] = argument
    return options


def media_direction(channel_variables: Mapping[str, str]) -> MediaDirection:
    """The direction the channel was created with; `both` when nothing (valid) says otherwise."""
    named = _plain_names(channel_variables)
    wanted = named.get(DIRECTION_VARIABLE) or dial_options(named.get(DIALED_PEER, "")).get("d", "")
    try:
        return MediaDirection(wanted.strip().lower())
    except ValueError:
        return MediaDirection.BOTH


def announced_call_id(channel_variables: Mapping[str, str]) -> str:
    """The call id the dialplan marked the channel with ("" when it did not)."""
    return _plain_names(channel_variables).get(CALL_ID_VARIABLE, "")


def call_variables(query: Mapping[str, str], channel_variables: Mapping[str, str]) -> dict[str, str]:
    """What the session reads as the call's variables (see the module docstring)."""
    merged = dict(query)
    merged.update(_plain_names(channel_variables))
    if merged.get(AMD_STATUS_VARIABLE):
        merged[AMD_KEY] = merged[AMD_STATUS_VARIABLE]
    if not merged.get(AMD_KEY, "x"):
        del merged[AMD_KEY]  # `amd=` with nothing: AMD did not run (the dial string passes it always)
    return merged


def _plain_names(variables: Mapping[str, str]) -> dict[str, str]:
    """`__X` read as `X` unless `X` itself is there too."""
    plain = {name: value for name, value in variables.items() if not name.startswith("__")}
    for name, value in variables.items():
        if name.startswith("__"):
            plain.setdefault(name[2:], value)
    return plain
