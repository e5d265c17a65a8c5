"""The fake text model: `POST /v1/chat/completions` on loopback.

It checks what the real service would refuse: the Bearer key, the body against the `openai` package's
`CompletionCreateParamsNonStreaming` (plus unknown top-level keys, which the TypedDict ignores), and a
strict `json_schema` response format. It answers a `chat.completion` (validated with the SDK's
`ChatCompletion` model) whose content is JSON matching the requested schema. `fail_next` makes the
next answers errors; `hold` keeps requests waiting until `release`.
"""

from __future__ import annotations

import asyncio
import json
import time
from dataclasses import dataclass, field
from typing import Any

from aiohttp import web
from openai.types.chat import ChatCompletion
from openai.types.chat.completion_create_params import CompletionCreateParamsNonStreaming
from pydantic import TypeAdapter, ValidationError

PARAMS = TypeAdapter(CompletionCreateParamsNonStreaming)
_PARAMS_TYPE: Any = CompletionCreateParamsNonStreaming
KNOWN_KEYS: frozenset[str] = _PARAMS_TYPE.__required_keys__ | _PARAMS_TYPE.__optional_keys__
DEFAULTS: dict[str, Any] = {"string": "unknown", "number": 1.5, "integer": 1, "boolean": True}


@dataclass
class FakeChatCompletions:
    api_key: str = "sk-analysis"
    summary: str = "The caller asked a question and the agent answered it."
    values: dict[str, Any] = field(default_factory=dict)  # what the model "finds" for each field
    requests: list[dict[str, Any]] = field(default_factory=list)  # valid bodies received
    problems: list[str] = field(default_factory=list)  # everything refused, for assert_clean
    failures: list[int] = field(default_factory=list)  # statuses to answer next, in order
    held: asyncio.Event = field(default_factory=asyncio.Event)
    port: int = 0
    _runner: web.AppRunner | None = None

    def __post_init__(self) -> None:
        self.held.set()  # set: answer at once

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}/v1/chat/completions"

    def fail_next(self, count: int, status: int = 500) -> None:
        self.failures += [status] * count

    def hold(self) -> None:
        self.held.clear()

    def release(self) -> None:
        self.held.set()

    def assert_clean(self) -> None:
        assert self.problems == [], self.problems

    async def start(self) -> None:
        app = web.Application()
        app.router.add_post("/v1/chat/completions", self._handle)
        self._runner = web.AppRunner(app, access_log=None)
        await self._runner.setup()
        site = web.TCPSite(self._runner, "127.0.0.1", 0)
        await site.start()
        self.port = self._runner.addresses[0][1]

    async def close(self) -> None:
        self.held.set()
        if self._runner is not None:
            await self._runner.cleanup()

    def _refuse(self, status: int, message: str, kind: str = "invalid_request_error") -> web.Response:
        self.problems.append(message)
        body = {"error": {"message": message, "type": kind, "param": None, "code": None}}
        return web.json_response(body, status=status)

    async def _handle(self, request: web.Request) -> web.Response:
        if request.headers.get("Authorization") != f"Bearer {self.api_key}":
            return self._refuse(401, "Incorrect API key provided", "invalid_api_key")
        try:
            body = json.loads(await request.read())
        except ValueError:
            return self._refuse(400, "the body is not JSON")
        if not isinstance(body, dict):
            return self._refuse(400, "the body is not an object")
        unknown = set(body) - KNOWN_KEYS
        if unknown:
            return self._refuse(400, f"Unrecognized request argument supplied: {sorted(unknown)}")
        try:
            PARAMS.validate_python(body)
        except ValidationError as exc:
            return self._refuse(400, f"invalid body: {exc.errors(include_url=False)}")
        schema = self._schema(body)
        if isinstance(schema, str):
            return self._refuse(400, schema)
        self.requests.append(body)
        await self.held.wait()
        if self.failures:
            status = self.failures.pop(0)
            return web.json_response(
                {"error": {"message": "The server had an error", "type": "server_error"}}, status=status
            )
        content = {"summary": self.summary}
        for name, prop in schema["properties"].items():
            if name != "summary":
                content[name] = self.values.get(name, DEFAULTS[prop["type"]])
        completion = {
            "id": f"chatcmpl-{len(self.requests)}",
            "object": "chat.completion",
            "created": int(time.time()),
            "model": body["model"],
            "choices": [
                {
                    "index": 0,
                    "finish_reason": "stop",
                    "logprobs": None,
                    "message": {"role": "assistant", "content": json.dumps(content), "refusal": None},
                }
            ],
            "usage": {"prompt_tokens": 100, "completion_tokens": 20, "total_tokens": 120},
        }
        ChatCompletion.model_validate(completion)  # the fake answers only what the SDK would parse
        return web.json_response(completion)

    @staticmethod
    def _schema(body: dict[str, Any]) -> dict[str, Any] | str:
        """The strict JSON schema asked for, or why it would be refused."""
        fmt = body.get("response_format")
        if not isinstance(fmt, dict) or fmt.get("type") != "json_schema":
            return "response_format must be a json_schema (the report needs structured output)"
        spec = fmt["json_schema"]
        schema = spec.get("schema")
        if not spec.get("strict") or not isinstance(schema, dict):
            return "json_schema must be strict and carry a schema"
        properties = schema.get("properties")
        if schema.get("type") != "object" or not isinstance(properties, dict):
            return "the schema must be an object with properties"
        if schema.get("additionalProperties") is not False:
            return "strict schemas need additionalProperties: false"
        if sorted(schema.get("required", [])) != sorted(properties):
            return "strict schemas must require every property"
        if "summary" not in properties:
            return "no summary property"
        for name, prop in properties.items():
            if not isinstance(prop, dict) or prop.get("type") not in DEFAULTS:
                return f"property {name}: unsupported type"
        return schema
