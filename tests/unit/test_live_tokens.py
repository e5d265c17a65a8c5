"""The live socket's tokens and the report's answer parsing: pure checks, no sockets."""

from __future__ import annotations

import json

import pytest

from bridge.errors import Unauthorized
from bridge.integrations.live import LiveTokens
from bridge.integrations.report import AnalysisFailed, parse_analysis, response_format

FIELDS = {"resolved": "boolean", "score": "integer", "mood": "number", "topic": "string"}


def tokens(now: float = 1_000_000.0, secret: bytes = b"s" * 32) -> LiveTokens:
    return LiveTokens(secret=secret, clock=lambda: now)


def test_a_token_is_bound_to_its_call_company_and_lifetime() -> None:
    issuer = tokens()
    issued = issuer.issue("call-1", "acme")
    assert issued.expires_at == 1_000_300.0
    assert issued.expires_at_iso.endswith("Z")
    assert issuer.verify(issued.token, "call-1") == "acme"
    with pytest.raises(Unauthorized) as other_call:
        issuer.verify(issued.token, "call-2")
    assert other_call.value.code == "invalid_token"
    with pytest.raises(Unauthorized):  # another process (another secret) never accepts it
        tokens(secret=b"t" * 32).verify(issued.token, "call-1")
    expires, company, mac = issued.token.split(".")
    for forged in (f"{int(expires) + 1}.{company}.{mac}", f"{expires}.Z2xvYmV4.{mac}", "", "a.b", "1.!.x"):
        with pytest.raises(Unauthorized):
            issuer.verify(forged, "call-1")
    with pytest.raises(Unauthorized) as expired:
        tokens(now=1_000_300.0).verify(issued.token, "call-1")
    assert expired.value.code == "token_expired"


def completion(content: object) -> dict[str, object]:
    return {"choices": [{"message": {"role": "assistant", "content": json.dumps(content)}}]}


def test_the_answer_must_match_the_declared_fields() -> None:
    good = {"summary": "ok", "resolved": False, "score": 3, "mood": 2, "topic": "bill"}
    analysis = parse_analysis(completion(good), FIELDS)
    assert analysis.summary == "ok"
    assert analysis.fields == {"resolved": False, "score": 3, "mood": 2, "topic": "bill"}
    for bad in (
        {**good, "score": True},  # a boolean is not an integer
        {**good, "resolved": "yes"},
        {key: value for key, value in good.items() if key != "topic"},
        {**good, "summary": 1},
    ):
        with pytest.raises(AnalysisFailed) as failed:
            parse_analysis(completion(bad), FIELDS)
        assert failed.value.retryable
    with pytest.raises(AnalysisFailed):
        parse_analysis({"choices": []}, FIELDS)
    refusal = {"choices": [{"message": {"role": "assistant", "content": None, "refusal": "no"}}]}
    with pytest.raises(AnalysisFailed) as refused:
        parse_analysis(refusal, FIELDS)
    assert not refused.value.retryable


def test_the_response_format_is_a_strict_schema_of_summary_and_fields() -> None:
    schema = response_format(FIELDS)["json_schema"]["schema"]
    assert schema["required"] == ["summary", *FIELDS]
    assert schema["additionalProperties"] is False
    assert schema["properties"]["score"] == {"type": "integer"}
