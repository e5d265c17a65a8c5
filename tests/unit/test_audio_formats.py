"""Format helpers added for the audio path: the silence of each encoding."""

from __future__ import annotations

from bridge.audio import g711
from bridge.audio.formats import ALAW, SLIN, SLIN24, ULAW


def test_silence_decodes_to_zero_or_the_smallest_step() -> None:
    assert ULAW.silence(3) == b"\xff\xff\xff"
    assert g711.ulaw_decode(ULAW.silence(4)) == bytes(8)
    assert ALAW.silence(2) == b"\xd5\xd5"
    assert g711.alaw_decode(ALAW.silence(1)) == (8).to_bytes(2, "little")  # A-law has no exact zero
    assert SLIN.silence(4) == bytes(4)
    assert SLIN24.silence(SLIN24.frame_bytes) == bytes(960)


def test_silence_is_what_the_encoders_make_of_zero() -> None:
    assert g711.ulaw_encode(bytes(2)) == bytes((ULAW.silence_byte,))
    assert g711.alaw_encode(bytes(2)) == bytes((ALAW.silence_byte,))
