"""Per-20 ms-frame CPU cost and quality of the audio path: `python -m bench.audio_micro`.

Costs are the best of several timeit repeats, in µs per 20 ms frame, bytes in -> bytes out.
Latency = mean output held back between frames + the measured shift of an impulse (as in
audio-measurements.md §3). Rejection = worst case over a sweep of tones: aliases of tones above the
target Nyquist on down-conversion, images (everything but the tone) on up-conversion.
"""

from __future__ import annotations

import math
import timeit
from collections.abc import Callable
from functools import partial

import numpy as np
import numpy.typing as npt
import soxr
import webrtcvad

from bridge.audio import g711
from bridge.audio.convert import Transcoder
from bridge.audio.formats import SLIN16, SLIN24, ULAW, AudioFormat
from bridge.audio.resample import Resampler
from bridge.audio.vad import SpeechDetector

Process = Callable[[bytes], bytes]
PAIRS = [(8000, 16000), (16000, 8000), (8000, 24000), (24000, 8000), (16000, 24000), (24000, 16000)]
EXTRA_PAIRS = [(8000, 48000), (48000, 8000), (16000, 48000), (48000, 16000)]
SOXR_PRESETS = ["QQ", "LQ", "MQ", "HQ"]
MODEL_PCM24 = SLIN24
MODEL_PCMU = ULAW


def best_us(func: Callable[[], object], number: int = 2000, repeat: int = 7) -> float:
    return min(timeit.repeat(func, number=number, repeat=repeat)) / number * 1e6


def make_stream(kind: str, in_rate: int, out_rate: int) -> Process:
    if kind == "FIR":
        return Resampler(in_rate, out_rate).process
    stream = soxr.ResampleStream(in_rate, out_rate, 1, dtype="int16", quality=kind)

    def process(pcm: bytes) -> bytes:
        out: npt.NDArray[np.int16] = stream.resample_chunk(np.frombuffer(pcm, dtype="<i2"))
        return out.tobytes()

    return process


def tone(rate: int, freq: float, seconds: float) -> npt.NDArray[np.int16]:
    t = np.arange(round(rate * seconds)) / rate
    return np.round(0.5 * 32767 * np.sin(2 * math.pi * freq * t)).astype("<i2")


def run_frames(
    process: Process, pcm: npt.NDArray[np.int16], in_rate: int, out_rate: int
) -> tuple[npt.NDArray[np.float64], float]:
    """(output, mean ms held back after each 20 ms frame)."""
    step, outs, held, total = in_rate // 50, [], [], 0
    for i in range(0, len(pcm), step):
        out = process(pcm[i : i + step].tobytes())
        total += len(out) // 2
        outs.append(out)
        held.append(((i + step) * out_rate / in_rate - total) / out_rate * 1000)
    return np.frombuffer(b"".join(outs), dtype="<i2").astype(np.float64), float(np.mean(held))


def latency_ms(kind: str, in_rate: int, out_rate: int) -> float:
    pcm = np.zeros(in_rate // 2, dtype="<i2")
    at = in_rate // 10
    pcm[at] = 20000
    out, held = run_frames(make_stream(kind, in_rate, out_rate), pcm, in_rate, out_rate)
    peak = int(np.argmax(np.abs(out)))
    lo, hi = max(0, peak - 40), peak + 41
    energy = out[lo:hi] ** 2
    centre = lo + float(np.sum(np.arange(len(energy)) * energy) / np.sum(energy))
    return held + (centre / out_rate - at / in_rate) * 1000


def rejection_db(kind: str, in_rate: int, out_rate: int) -> float:
    """Worst-case alias (down) or image (up) rejection over a sweep of tones."""
    lower_nyquist = min(in_rate, out_rate) / 2
    if out_rate < in_rate:
        freqs = np.linspace(1.02 * lower_nyquist, 0.95 * in_rate / 2, 12)
    else:
        freqs = np.linspace(300, 0.85 * lower_nyquist, 12)
    worst = math.inf
    for freq in freqs:
        out, _ = run_frames(make_stream(kind, in_rate, out_rate), tone(in_rate, freq, 0.5), in_rate, out_rate)
        body = out[len(out) // 4 :]
        if out_rate < in_rate:
            unwanted = body
        else:
            t = np.arange(len(body)) / out_rate
            basis = np.column_stack([np.sin(2 * math.pi * freq * t), np.cos(2 * math.pi * freq * t)])
            coef, *_ = np.linalg.lstsq(basis, body, rcond=None)
            unwanted = body - basis @ coef
        rms = max(float(np.sqrt(np.mean(unwanted**2))), 1e-9)
        worst = min(worst, 20 * math.log10(0.5 * 32767 / math.sqrt(2) / rms))
    return worst


def frame_cost_us(kind: str, in_rate: int, out_rate: int) -> float:
    process = make_stream(kind, in_rate, out_rate)
    frame = (np.random.default_rng(0).standard_normal(in_rate // 50) * 3000).astype("<i2").tobytes()
    return best_us(lambda: process(frame))


def g711_rows() -> list[tuple[str, float]]:
    pcm = tone(8000, 1000, 0.02).tobytes()
    codes = g711.ulaw_encode(pcm)
    return [
        ("ulaw encode", best_us(lambda: g711.ulaw_encode(pcm), 20000)),
        ("ulaw decode", best_us(lambda: g711.ulaw_decode(codes), 20000)),
        ("alaw encode", best_us(lambda: g711.alaw_encode(pcm), 20000)),
        ("alaw decode", best_us(lambda: g711.alaw_decode(codes), 20000)),
        ("ulaw -> alaw (translate)", best_us(lambda: g711.ulaw_to_alaw(codes), 20000)),
    ]


def vad_rows() -> list[tuple[str, float]]:
    rows = []
    for rate in (8000, 16000, 24000):
        frame = tone(rate, 440, 0.02).tobytes()
        if rate != 24000:
            vad = webrtcvad.Vad(2)
            rows.append(
                (f"webrtcvad.is_speech {rate // 1000} kHz", best_us(partial(vad.is_speech, frame, rate)))
            )
        detector = SpeechDetector(rate)
        note = " (resampled to 8 kHz)" if rate == 24000 else ""
        rows.append((f"SpeechDetector.feed {rate // 1000} kHz{note}", best_us(partial(detector.feed, frame))))
    return rows


def leg_rows(model: AudioFormat) -> list[tuple[str, float, float, float]]:
    rows = []
    for leg in (ULAW, SLIN16, SLIN24):
        uplink, downlink = Transcoder(leg, model), Transcoder(model, leg)
        up_frame = bytes(leg.frame_bytes) if leg.bytes_per_sample == 2 else leg.silence(leg.frame_bytes)
        noise = (np.random.default_rng(1).standard_normal(model.sample_rate // 50) * 3000).astype("<i2")
        down_frame = noise.tobytes() if model.bytes_per_sample == 2 else g711.ulaw_encode(noise.tobytes())
        up_us = best_us(partial(uplink.convert, up_frame))
        down_us = best_us(partial(downlink.convert, down_frame))
        rows.append((leg.name, up_us, down_us, uplink.latency_ms + downlink.latency_ms))
    return rows


def main() -> None:
    print("G.711, per 20 ms frame (160 samples)")
    for name, us in g711_rows():
        print(f"  {name:<28} {us:7.2f} µs")

    print("\nResamplers, 20 ms int16 frames (FIR = bridge.audio.resample; soxr = ResampleStream int16)")
    header = f"  {'pair':<14}{'method':<7}{'µs/frame':>10}{'latency ms':>12}{'rejection dB':>14}"
    print(header)
    for in_rate, out_rate in PAIRS + EXTRA_PAIRS:
        kinds = ["FIR", *SOXR_PRESETS] if (in_rate, out_rate) in PAIRS else ["FIR", "HQ"]
        for kind in kinds:
            cost = frame_cost_us(kind, in_rate, out_rate)
            lat = latency_ms(kind, in_rate, out_rate)
            rej = rejection_db(kind, in_rate, out_rate)
            kind_of = "alias" if out_rate < in_rate else "image"
            pair = f"{in_rate // 1000}k->{out_rate // 1000}k"
            print(f"  {pair:<14}{kind:<7}{cost:10.1f}{lat:12.2f}{rej:10.1f} {kind_of}")
    ctor = best_us(lambda: Resampler(8000, 24000), 50, 3)
    ctor_hq = best_us(lambda: soxr.ResampleStream(8000, 24000, 1, dtype="int16", quality="HQ"), 200, 3)
    print(f"  constructor 8k->24k: FIR {ctor:.0f} µs, soxr HQ {ctor_hq:.0f} µs")

    print("\nVAD, per 20 ms frame")
    for name, us in vad_rows():
        print(f"  {name:<42} {us:7.2f} µs")

    for model, label in ((MODEL_PCM24, "model speaks 24 kHz PCM"), (MODEL_PCMU, "model speaks pcmu 8 kHz")):
        print(f"\nCall leg transcoding per 20 ms each way, {label}")
        print(
            f"  {'leg':<8}{'uplink µs':>11}{'downlink µs':>13}{'total µs':>10}{'% core':>8}{'added ms':>10}"
        )
        for leg, up_us, down_us, added in leg_rows(model):
            total = up_us + down_us
            print(f"  {leg:<8}{up_us:11.1f}{down_us:13.1f}{total:10.1f}{total / 200:8.3f}{added:10.2f}")


if __name__ == "__main__":
    main()
