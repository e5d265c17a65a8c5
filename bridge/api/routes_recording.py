"""A call's recording: the stereo WAV (caller left, bot right) as a file with ranges, or as it grows.

Both routes answer for the authenticated company's calls only: another company's call is 404
`unknown_call` exactly like an unknown id; a call of its own with no recording is 404
`recording_not_found`.
"""

from __future__ import annotations

import asyncio
import contextlib
from pathlib import Path
from typing import Final

from aiohttp import web

from bridge.api.appkeys import CALLS, COMPANY
from bridge.api.openapi import Operation
from bridge.errors import BadRequest, NotFound
from bridge.recording.recorder import CallRecording
from bridge.recording.service import Recordings
from bridge.recording.wavfile import HEADER_BYTES, STREAMING_SIZE, header
from bridge.session.admission import valid_call_id

WAV: Final = "audio/wav"
CHUNK_BYTES: Final = 64 * 1024
_WAIT_S: Final = 1.0  # a live stream looks at the file at least this often


def _read_at(path: Path, offset: int, size: int) -> bytes:
    try:
        with open(path, "rb") as f:
            f.seek(offset)
            return f.read(size)
    except FileNotFoundError:  # the writer has not created it yet
        return b""


def recording_operations(recordings: Recordings) -> list[Operation]:
    async def lookup(request: web.Request) -> tuple[str, str]:
        call_id = request.match_info["call_id"]
        if not valid_call_id(call_id):
            raise BadRequest("call_id: 1 to 128 letters, digits or . _ : -", code="validation_error")
        company_id = request[COMPANY].id
        await request.app[CALLS].record(company_id, call_id)  # 404 unknown_call: not theirs, or no call
        return company_id, call_id

    def missing(call_id: str) -> NotFound:
        return NotFound(f"call {call_id} has no recording", code="recording_not_found")

    async def file_response(company_id: str, call_id: str) -> web.FileResponse:
        path = await recordings.find(company_id, call_id)
        if path is None:
            raise missing(call_id)
        # FileResponse answers Range (206, 416) and reads the file in the executor.
        return web.FileResponse(path, headers={"Content-Type": WAV})

    async def get_recording(request: web.Request) -> web.StreamResponse:
        return await file_response(*await lookup(request))

    async def stream_recording(request: web.Request) -> web.StreamResponse:
        company_id, call_id = await lookup(request)
        live = recordings.live(company_id, call_id)
        if live is None:
            return await file_response(company_id, call_id)
        await live.began.wait()  # the leg's format, or the call ended before it had one
        fmt = live.format
        if fmt is None or live.failed:
            raise missing(call_id)
        response = web.StreamResponse(headers={"Content-Type": WAV, "Cache-Control": "no-store"})
        response.enable_chunked_encoding()
        await response.prepare(request)
        with contextlib.suppress(ConnectionError):
            await response.write(header(fmt.sample_rate, STREAMING_SIZE))
            await _follow(response, live)
            await response.write_eof()
        return response

    return [
        Operation(
            "GET",
            "/api/calls/{call_id}/recording",
            get_recording,
            "The call's recording: a stereo 16-bit WAV, caller left, bot right, at the leg's rate",
            "calls",
            text_response=WAV,
            ranges=True,
            errors=(404,),
            description="Range requests are honoured (206 with Content-Range; 416 when unsatisfiable). "
            "While the call runs this is what has been written so far.",
        ),
        Operation(
            "GET",
            "/api/calls/{call_id}/recording/stream",
            stream_recording,
            "The recording as it grows while the call is live (chunked WAV with a streaming header, "
            "ending when the call ends), or the finished file",
            "calls",
            text_response=WAV,
            errors=(404,),
        ),
    ]


async def _follow(response: web.StreamResponse, live: CallRecording) -> None:
    """Send the file's audio as it is written, until the recording is finished and all sent."""
    offset = HEADER_BYTES
    while True:
        grown = live.grown  # taken before reading: a write after the read still wakes us
        done = live.finished.is_set()
        chunk = await asyncio.to_thread(_read_at, live.path, offset, CHUNK_BYTES)
        if chunk:
            await response.write(chunk)
            offset += len(chunk)
            continue
        if done:
            return
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(grown.wait(), _WAIT_S)
