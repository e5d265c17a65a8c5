"""The recording's timeline, WAV file, repair, paths and retention (no event loop, no sockets)."""

from __future__ import annotations

import os
import time
import wave
from pathlib import Path

import numpy as np
import pytest

from bridge.audio.formats import SLIN16, ULAW
from bridge.audio.g711 import ulaw_encode
from bridge.recording.recorder import CallRecording
from bridge.recording.service import Recordings
from bridge.recording.timeline import Block, StereoTimeline
from bridge.recording.wavfile import HEADER_BYTES, StereoWavWriter, header, parse_header, repair

RATE = 16000
FRAME = 320  # samples in 20 ms at 16 kHz


def frame(value: int, samples: int = FRAME) -> bytes:
    return np.full(samples, value, dtype="<i2").tobytes()


def samples(data: bytes) -> np.ndarray:
    return np.frombuffer(data, dtype="<i2")


def test_caller_frames_land_in_order_and_a_real_gap_is_silence() -> None:
    tl = StereoTimeline(SLIN16, origin=100.0, hold_s=0.0)
    for k in range(5):  # 100 ms of caller audio, read on time
        tl.caller(frame(1000), 100.0 + (k + 1) * 0.02)
    tl.caller(frame(2000), 100.0 + 0.1 + 1.5 + 0.02)  # then nothing for 1.5 s (over the 1 s gap_s)
    block = tl.commit(101.7)
    assert block is not None
    left = samples(block.left)
    assert (left[: 5 * FRAME] == 1000).all()
    assert (left[5 * FRAME : 5 * FRAME + 24000] == 0).all()  # the 1.5 s gap
    assert (left[5 * FRAME + 24000 : 6 * FRAME + 24000] == 2000).all()


def test_a_short_stall_does_not_shift_the_caller_track() -> None:
    tl = StereoTimeline(SLIN16, origin=0.0, hold_s=0.0)
    tl.caller(frame(1), 0.02)
    for _ in range(5):  # the loop stalled 100 ms, then read a burst of frames at once
        tl.caller(frame(1), 0.12)
    assert tl.left_end == 6 * FRAME
    tl.caller(frame(1), 0.12 + 0.6)  # a 600 ms stall on a loaded machine: still no silence inserted
    assert tl.left_end == 7 * FRAME


def test_bot_audio_queues_after_itself_and_a_barge_in_cuts_what_was_not_heard() -> None:
    tl = StereoTimeline(SLIN16, origin=0.0, hold_s=0.0)
    tl.bot(frame(500, RATE * 3), now=1.0)  # a 3 s greeting arrives at once, at 1 s: plays 1..4 s
    assert tl.right_end == 4 * RATE
    tl.interrupt(played_ms=1200.0, now=2.2)  # the caller talked over it after 1.2 s
    assert tl.right_end == round(2.2 * RATE)
    tl.bot(frame(700, FRAME), now=3.0)  # the next response plays when it comes
    block = tl.commit(5.0, final=True)
    assert block is not None
    right = samples(block.right)
    assert (right[:RATE] == 0).all()
    assert (right[RATE : round(2.2 * RATE)] == 500).all()
    assert (right[round(2.2 * RATE) : 3 * RATE] == 0).all()
    assert (right[3 * RATE : 3 * RATE + FRAME] == 700).all()
    assert len(block.left) == len(block.right)


def test_commit_holds_back_recent_audio_and_the_final_commit_drops_what_was_never_played() -> None:
    tl = StereoTimeline(SLIN16, origin=0.0, hold_s=0.4)
    tl.bot(frame(9, RATE * 10), now=0.0)  # 10 s queued
    block = tl.commit(1.0)
    assert block is not None
    assert block.start == 0
    assert len(block.right) == 2 * round(0.6 * RATE)
    last = tl.commit(2.0, final=True)  # hung up at 2 s: 8 s were never played
    assert last is not None
    assert last.start + len(last.right) // 2 == 2 * RATE


def test_writer_decodes_ulaw_interleaves_and_keeps_time_over_a_dropped_block(tmp_path: Path) -> None:
    path = tmp_path / "acme" / "c1.wav"
    writer = StereoWavWriter(path, ULAW)
    writer.open()
    caller = ulaw_encode(frame(1000, 160))
    bot = ulaw_encode(frame(-1000, 160))
    writer.write(Block(0, caller, bot))
    writer.write(Block(320, caller, bot))  # block 160..320 was dropped: silence there
    writer.close()
    with wave.open(str(path)) as w:
        assert (w.getnchannels(), w.getsampwidth(), w.getframerate(), w.getnframes()) == (2, 2, 8000, 480)
        stereo = samples(w.readframes(480)).reshape(-1, 2)
    assert np.allclose(stereo[:160, 0], 1000, atol=40)
    assert np.allclose(stereo[:160, 1], -1000, atol=40)
    assert (stereo[160:320] == 0).all()
    assert np.allclose(stereo[320:, 0], 1000, atol=40)


def test_a_crash_truncated_file_is_repaired_from_its_length_and_an_empty_one_deleted(tmp_path: Path) -> None:
    path = tmp_path / "c.wav"
    path.write_bytes(header(8000, 0) + bytes(4 * 1000 + 3))  # sizes never updated, a torn last frame
    assert repair(path) == "repaired"
    with wave.open(str(path)) as w:
        assert w.getnframes() == 1000
    assert path.stat().st_size == HEADER_BYTES + 4000
    assert repair(path) == "ok"
    empty = tmp_path / "e.wav"
    empty.write_bytes(header(8000, 0)[:30])
    assert repair(empty) == "deleted"
    assert not empty.exists()
    assert parse_header(header(16000, 8)) == 16000


@pytest.mark.parametrize(
    ("company", "call"), [("..", "x"), ("acme", ".."), ("acme", "a/b"), ("a/../..", "x"), ("", "x")]
)
def test_a_path_never_leaves_the_recordings_dir(tmp_path: Path, company: str, call: str) -> None:
    recordings = Recordings(tmp_path, 30)
    with pytest.raises(ValueError):
        recordings.path_for(company, call)
    assert recordings.path_for("acme", "c.1:2") == tmp_path.resolve() / "acme" / "c.1:2.wav"


def test_retention_removes_old_recordings_and_keeps_new_ones(tmp_path: Path) -> None:
    recordings = Recordings(tmp_path, retention_days=30)
    old, new = tmp_path / "acme" / "old.wav", tmp_path / "acme" / "new.wav"
    old.parent.mkdir()
    for p in (old, new):
        p.write_bytes(header(8000, 4) + bytes(4))
    month_ago = time.time() - 31 * 86400
    os.utime(old, (month_ago, month_ago))
    assert recordings.sweep() == 1
    assert not old.exists()
    assert new.exists()


async def test_a_writer_that_falls_behind_loses_blocks_counted_never_memory(tmp_path: Path) -> None:
    recording = CallRecording(tmp_path / "acme" / "slow.wav", "slow", max_pending=2)
    for k in range(5):  # no writer is draining the queue
        recording._enqueue(Block(k * 160, bytes(160), bytes(160)))
    assert recording.queue.qsize() == 2
    assert recording.dropped_blocks == 3
    await recording.aclose()  # never started: nothing to write, and it says it is finished
    assert recording.finished.is_set()
    assert not recording.path.exists()
