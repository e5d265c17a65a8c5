"""Shared test data: a two-company configuration with known keys."""

from __future__ import annotations

import socket
from typing import Any

from bridge.keys import hash_key
from bridge.settings import Settings, build_settings

ACME_KEY = "acme-key-0123456789"
ACME_KEY_2 = "acme-key-second-9876"
GLOBEX_KEY = "globex-key-abcdef"
CONNECTOR_KEY = "connector-key-xyz"
ACME_PHONE = "+34987654321"
GLOBEX_PHONE = "+442071234567"


def raw_config(**server: Any) -> dict[str, Any]:
    return {
        "server": {"host": "127.0.0.1", "port": 0, **server},
        "connector": {"api_keys": [hash_key(CONNECTOR_KEY)]},
        "audiosocket": {"enabled": False},
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


def make_settings(**server: Any) -> Settings:
    return build_settings(raw_config(**server))


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port
