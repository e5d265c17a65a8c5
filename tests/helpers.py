"""Shared test data: a two-company configuration with known keys."""

from __future__ import annotations

import contextlib
import socket
from collections.abc import AsyncIterator
from typing import Any

import numpy as np
from aiohttp import web

from bridge.keys import hash_key
from bridge.settings import Settings, build_settings

ACME_KEY = "acme-key-0123456789"
ACME_KEY_2 = "acme-key-second-9876"
GLOBEX_KEY = "globex-key-abcdef"
CONNECTOR_KEY = "connector-key-xyz"
ADMIN_KEY = "admin-key-operator-42"
ACME_PHONE = "+34987654321"
GLOBEX_PHONE = "+442071234567"
# Every environment variable config/bridge.example.toml names; tests start with none of them set.
EXAMPLE_VARIABLES = (
    "BRIDGE_AMI_SECRET",
    "BRIDGE_ARI_PASSWORD",
    "OPENAI_API_KEY",
    "AZURE_OPENAI_API_KEY",
    "XAI_API_KEY",
    "GEMINI_API_KEY",
    "ELEVENLABS_API_KEY",
    "DEEPGRAM_API_KEY",
    "ULTRAVOX_API_KEY",
    "ACME_CRM_TOKEN",
    "ACME_WHATSAPP_TOKEN",
    "ACME_WEBHOOK_SECRET",
)


def raw_config(*, audiosocket: dict[str, Any] | None = None, **server: Any) -> dict[str, Any]:
    return {
        "server": {"host": "127.0.0.1", "port": 0, **server},
        "storage": {"url": "sqlite://:memory:"},
        "connector": {"api_keys": [hash_key(CONNECTOR_KEY)]},
        "admin": {"api_keys": [hash_key(ADMIN_KEY)]},
        "audiosocket": {"enabled": True, "port": 0, **audiosocket}
        if audiosocket is not None
        else {"enabled": False},
        "companies": [
            {
                "id": "acme",
                "name": "Acme Ltd",
                "api_keys": [hash_key(ACME_KEY), ACME_KEY_2],
                "phones": [ACME_PHONE],
                "emails": ["ops@acme.example"],
                "whatsapp_numbers": [
                    {
                        "phone_number_id": "123456789",
                        "display_phone_number": "+34 987 654 321",
                        "verified_name": "Acme",
                        "is_active": True,
                        "verification_status": "verified",
                    }
                ],
                "agent": {"provider": "echo"},
            },
            {
                "id": "globex",
                "name": "Globex",
                "api_keys": [hash_key(GLOBEX_KEY)],
                "phones": [GLOBEX_PHONE],
                "allowed_callers": ["+15551234567"],
                "agent": {"provider": "echo"},
            },
        ],
    }


def make_settings(*, audiosocket: dict[str, Any] | None = None, **server: Any) -> Settings:
    return build_settings(raw_config(audiosocket=audiosocket, **server))


@contextlib.asynccontextmanager
async def serving(app: web.Application) -> AsyncIterator[int]:
    """`app` served on a free loopback port (yielded) until the block ends."""
    runner = web.AppRunner(app)
    await runner.setup()
    await web.TCPSite(runner, "127.0.0.1", 0).start()
    try:
        yield runner.addresses[0][1]
    finally:
        await runner.cleanup()


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def voiced(sample_rate: int, seconds: float, f0: float = 140.0, level: float = 0.3) -> Any:
    """A vowel-like sound (harmonics of f0 under a syllable-rate envelope) that WebRTC VAD calls speech."""

    t = np.arange(int(sample_rate * seconds)) / sample_rate
    harmonics = sum(np.sin(2 * np.pi * f0 * k * t) / k for k in range(1, 12) if f0 * k < sample_rate / 2)
    envelope = 0.6 + 0.4 * np.sin(2 * np.pi * 4.0 * t)
    return (harmonics * envelope * level * 32767 / 2).astype(np.int16)


def utterances(sample_rate: int, spans: list[tuple[float, float]]) -> bytes:
    """s16le audio: voiced sound over each (start, end) second span, silence elsewhere."""

    total = max(end for _, end in spans)
    out = np.zeros(int(sample_rate * total), dtype=np.int16)
    for index, (start, end) in enumerate(spans):
        piece = voiced(sample_rate, end - start, f0=120.0 + 25 * index)
        first = int(start * sample_rate)
        out[first : first + len(piece)] = piece
    return out.tobytes()


def best_correlation(
    sent: bytes, received: bytes, sample_rate: int, max_lag_s: float = 1.0
) -> tuple[float, int]:
    """Highest normalised cross-correlation of `received` against `sent`, over lags 0..max_lag_s.

    Candidate lags come from an FFT cross-correlation; each is then scored exactly on the overlap.
    """

    a = np.frombuffer(sent, dtype=np.int16).astype(np.float64)
    b = np.frombuffer(received, dtype=np.int16).astype(np.float64)
    size = 1 << int(np.ceil(np.log2(len(a) + len(b))))
    raw = np.fft.irfft(np.fft.rfft(b, size) * np.conj(np.fft.rfft(a, size)), size)
    max_lag = min(int(max_lag_s * sample_rate), len(b) - 1)
    candidates = np.argsort(raw[: max_lag + 1])[-5:]
    best, best_lag = 0.0, 0
    for lag in (int(c) for c in candidates):
        n = min(len(a), len(b) - lag)
        x, y = a[:n], b[lag : lag + n]
        denominator = float(np.sqrt(np.dot(x, x) * np.dot(y, y)))
        score = float(np.dot(x, y)) / denominator if denominator else 0.0
        if score > best:
            best, best_lag = score, lag
    return best, best_lag
