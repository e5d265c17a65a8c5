"""One direction of a call's format conversion: decode G.711, resample if the rates differ, encode.

Build one `Transcoder` per direction per call (it carries resampler state). When source and
destination are the same format nothing runs and `convert` hands back the very object it was given.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from types import MappingProxyType
from typing import Final

from bridge.audio import g711
from bridge.audio.formats import AudioFormat, Encoding
from bridge.audio.resample import Resampler

_Step = Callable[[bytes], bytes]

_DECODERS: Final[Mapping[Encoding, _Step]] = MappingProxyType(
    {Encoding.ULAW: g711.ulaw_decode, Encoding.ALAW: g711.alaw_decode}
)
_ENCODERS: Final[Mapping[Encoding, _Step]] = MappingProxyType(
    {Encoding.ULAW: g711.ulaw_encode, Encoding.ALAW: g711.alaw_encode}
)
# Same rate, one G.711 law to the other: a 256-byte translate, no samples materialised.
_CODE_TO_CODE: Final[Mapping[tuple[Encoding, Encoding], _Step]] = MappingProxyType(
    {
        (Encoding.ULAW, Encoding.ALAW): g711.ulaw_to_alaw,
        (Encoding.ALAW, Encoding.ULAW): g711.alaw_to_ulaw,
    }
)


class Transcoder:
    """Converts a stream from `src` to `dst`, statefully when it resamples."""

    __slots__ = ("_decode", "_direct", "_dst", "_encode", "_passthrough", "_resampler", "_src")

    def __init__(self, src: AudioFormat, dst: AudioFormat) -> None:
        self._src = src
        self._dst = dst
        # Names may differ for one format (slin vs slin@8000); encoding and rate are what matter.
        self._passthrough = (src.encoding, src.sample_rate) == (dst.encoding, dst.sample_rate)
        self._decode = _DECODERS.get(src.encoding)
        self._encode = _ENCODERS.get(dst.encoding)
        self._resampler = (
            Resampler(src.sample_rate, dst.sample_rate) if src.sample_rate != dst.sample_rate else None
        )
        self._direct = _CODE_TO_CODE.get((src.encoding, dst.encoding)) if self._resampler is None else None

    @property
    def src(self) -> AudioFormat:
        return self._src

    @property
    def dst(self) -> AudioFormat:
        return self._dst

    @property
    def is_passthrough(self) -> bool:
        """True when src and dst are one format: `convert` returns its argument object unchanged."""
        return self._passthrough

    @property
    def latency_ms(self) -> float:
        """Delay the conversion adds (the resampler's group delay; G.711 adds none)."""
        return self._resampler.latency_ms if self._resampler is not None else 0.0

    def convert(self, data: bytes) -> bytes:
        """Convert the next chunk of the stream (whole samples of `src`)."""
        if self._passthrough:
            return data
        if self._direct is not None:
            return self._direct(data)
        pcm = self._decode(data) if self._decode is not None else data
        if self._resampler is not None:
            pcm = self._resampler.process(pcm)
        return self._encode(pcm) if self._encode is not None else pcm

    def flush(self) -> bytes:
        """The tail still inside the resampler, converted; the stream then starts afresh."""
        if self._resampler is None:
            return b""
        tail = self._resampler.flush()
        return self._encode(tail) if self._encode is not None else tail

    def reset(self) -> None:
        """Drop held audio without emitting it (barge-in)."""
        if self._resampler is not None:
            self._resampler.reset()
