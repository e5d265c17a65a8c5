"""When each `response.create` may go out: one response at a time, the others owed until it ends.

The server runs one response at a time and refuses a `response.create` while one is active
(`conversation_already_has_active_response`). So every response the bridge asks for (the greeting, the
turn after a tool result or the caller's keys, a text to say) goes out at once only when nothing is
active or already requested, and otherwise waits its turn (an interrupting say goes first).

A response that says a given text carries a `say_id`, so the client can report when it is over. The
first `response.created` after our create is taken as ours; when the server's own VAD slipped a
response in between, it refuses ours next, and the request (tag included) goes back to the front of the
queue. Pure: no I/O.
"""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass, field
from typing import Any


@dataclass(slots=True)
class ResponseRequest:
    body: dict[str, Any] = field(default_factory=dict)  # the `response` object; {} for a plain turn
    say_id: int | None = None


class ResponseSchedule:
    def __init__(self) -> None:
        self.active: str | None = None  # the server's response in progress
        self._requested: ResponseRequest | None = None  # sent, its response.created not seen yet
        self._owed: deque[ResponseRequest] = deque()
        self._says: dict[str, int] = {}  # response id -> say id
        self._claimed: tuple[str, ResponseRequest] | None = None  # the last response taken as ours

    @property
    def idle(self) -> bool:
        return self.active is None and self._requested is None

    @property
    def owed(self) -> int:
        return len(self._owed)

    def want(self, request: ResponseRequest, *, first: bool = False) -> ResponseRequest | None:
        """Ask for a response: returned if it should be sent now, else queued (`first`: ahead of others)."""
        if self.idle and not self._owed:
            self._requested = request
            return request
        if first:
            self._owed.appendleft(request)
        else:
            self._owed.append(request)
        return self._next()

    def created(self, response_id: str) -> None:
        self.active = response_id
        request, self._requested = self._requested, None
        self._claimed = None if request is None else (response_id, request)
        if request is not None and request.say_id is not None:
            self._says[response_id] = request.say_id

    def done(self, response_id: str) -> tuple[int | None, ResponseRequest | None]:
        """The response is over: the say it spoke (if any), and the next request to send now (if any)."""
        if self.active in (response_id, None):
            self.active = None
        if self._claimed is not None and self._claimed[0] == response_id:
            self._claimed = None
        return self._says.pop(response_id, None), self._next()

    def refused(self) -> None:
        """The server refused our create (a response was active): it waits for the next turn."""
        if self._requested is not None:
            self._owed.appendleft(self._requested)
            self._requested = None
        elif self._claimed is not None and self._claimed[0] == self.active:
            # The response we took as ours was the server's own: ours was the one refused.
            response_id, request = self._claimed
            self._says.pop(response_id, None)
            self._owed.appendleft(request)
            self._claimed = None

    def lost(self) -> list[int]:
        """The connection is gone (the server forgot its responses): returns the says cut short.

        Requests never sent stay owed, to be asked of the next connection (`resume`); one sent and not
        yet confirmed is given up with the active one (the server may have started it: never twice).
        """
        cut = list(self._says.values())
        if self._requested is not None and self._requested.say_id is not None:
            cut.append(self._requested.say_id)
        self.active, self._requested, self._claimed = None, None, None
        self._says.clear()
        return cut

    def resume(self) -> ResponseRequest | None:
        """On a fresh connection: the owed request to send now, if any."""
        return self._next()

    def _next(self) -> ResponseRequest | None:
        if not self.idle or not self._owed:
            return None
        self._requested = self._owed.popleft()
        return self._requested
