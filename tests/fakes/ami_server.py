"""A strict fake Asterisk Manager Interface, written on plain asyncio streams (not panoramisk).

Wire format and replies follow the Asterisk 22.10.1 captures (shared/captures/asterisk-22.10.1/ami_*.jsonl)
and main/manager.c: banner `Asterisk Call Manager/11.0.0`, `Response:` then `ActionID:` then `Message:`,
`Authentication failed` then a closed socket, `FullyBooted` after login, `Permission denied` for a
missing write class; events reach a user only if its read classes cover every class of their
`Privilege` (FullyBooted needs `system`), as manager.c filters them. It is stricter than Asterisk
where the bridge must never rely on leniency (Async must be true, ChannelId required, Timeout a whole
number of milliseconds, one DTMF digit, no regex hangups): such requests get `Response: Error` with a
message starting `Fake AMI:`.

`Status` answers as the captures show (ami_dtmf_events.jsonl): `Success` with `EventList: start`, one
`Event: Status` per channel with a `Variable: NAME=value` header per requested name (`(null)` when
unset), then `StatusComplete`. Variables are read the way Asterisk reads them: a name matches a stored
`_NAME` or `__NAME` (inheritance prefixes are not part of the name), and a prefixed name matches nothing.

Dials are scripted per destination (the Channel's data before '@', e.g. `PJSIP/15551234@trunk` →
`15551234`): answer, busy, no answer, congestion, fail, rejected, permission denied, drop (close every
connection after the ack, mid-call), drop before the ack, or silent (ack, then nothing).
"""

from __future__ import annotations

import asyncio
import contextlib
import inspect
import itertools
import re
import time
from collections.abc import Awaitable, Callable, Iterable, Mapping
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any

VERSION = "11.0.0"  # what Asterisk 22.10.1 announces (captures)
ALL_WRITE = frozenset({"originate", "call", "system"})
MAX_UNIQUEID = 149  # AST_MAX_PUBLIC_UNIQUEID

# Write classes an action needs (any one of them), from each action's registration in Asterisk
# (main/manager.c `ast_manager_register_xml_core`, apps' `ast_manager_register_xml`).
ACTION_CLASSES: dict[str, frozenset[str]] = {
    "originate": frozenset({"originate"}),
    "redirect": frozenset({"call"}),
    "hangup": frozenset({"system", "call"}),
    "playdtmf": frozenset({"call"}),
    "getvar": frozenset({"call", "reporting"}),
    "status": frozenset({"system", "call", "reporting"}),
    "ping": frozenset(),
    "logoff": frozenset(),
}

CAUSE_TEXT = {
    16: "Normal Clearing",
    17: "User busy",
    19: "No answer",
    21: "Call Rejected",
    34: "Circuit/channel congestion",
}

Headers = dict[str, str | list[str]]
AnswerHook = Callable[[str, dict[str, str]], Awaitable[None] | None]


class Outcome(StrEnum):
    ANSWER = "answer"
    BUSY = "busy"
    NO_ANSWER = "no_answer"
    CONGESTION = "congestion"
    REJECTED = "rejected"
    FAIL = "fail"  # no channel at all (no route / unavailable): Reason 0
    PERMISSION_DENIED = "permission_denied"  # immediate Response: Error
    DROP = "drop"  # ack, then every AMI connection is closed before the OriginateResponse
    DROP_BEFORE_ACK = "drop_before_ack"  # every AMI connection is closed instead of an ack
    SILENT = "silent"  # ack, then nothing


# Outcome -> (OriginateResponse Reason, Hangup cause)
_FAILURES: dict[Outcome, tuple[int, int]] = {
    Outcome.BUSY: (5, 17),
    Outcome.NO_ANSWER: (3, 19),
    Outcome.CONGESTION: (8, 34),
    Outcome.REJECTED: (1, 21),
}


@dataclass
class DialScript:
    outcome: Outcome = Outcome.ANSWER
    delay: float = 0.02  # seconds from the ack to the outcome


@dataclass
class FakeChannel:
    name: str
    uniqueid: str
    variables: dict[str, str] = field(default_factory=dict)
    caller_num: str = "<unknown>"
    caller_name: str = "<unknown>"
    context: str = "default"
    exten: str = "s"
    state: str = "Down"
    dtmf: list[str] = field(default_factory=list)
    redirects: list[tuple[str, str, str]] = field(default_factory=list)  # (context, exten, priority)
    hangup_cause: int | None = None
    linkedid: str = ""  # "" = its own uniqueid
    bridge_id: str = ""  # the bridge it is in ("" = none)

    def read_variable(self, name: str) -> str | None:
        """Asterisk's read: the stored name without its inheritance prefix (`_X`, `__X`) must equal
        `name`, so `__X` itself is never found (captures: Status and Getvar of `__CUSTOMER`)."""
        for stored, value in self.variables.items():
            if _unprefixed(stored) == name:
                return value
        return None


def _unprefixed(name: str) -> str:
    return name[2:] if name.startswith("__") else name[1:] if name.startswith("_") else name


@dataclass(frozen=True)
class ReceivedAction:
    name: str  # the Action header as sent
    headers: Headers  # every header as sent; repeated ones as lists
    connection: int  # 1-based connection counter
    username: str | None  # logged-in user, None before login
    at: float = field(default_factory=time.time)  # when it arrived (epoch seconds)

    def get(self, key: str) -> str:
        """The first value of a header (case-insensitive), '' when absent."""
        values = self.getlist(key)
        return values[0] if values else ""

    def getlist(self, key: str) -> list[str]:
        for name, value in self.headers.items():
            if name.lower() == key.lower():
                return list(value) if isinstance(value, list) else [value]
        return []


@dataclass(eq=False)  # hashed by identity: kept in a set
class _Session:
    number: int
    writer: asyncio.StreamWriter
    username: str | None = None
    events: bool = True


def split_variable_header(value: str) -> list[str]:
    """Asterisk's app-argument split of one `Variable:` value: commas separate items unless quoted,
    in parentheses/brackets, or escaped; quotes are dropped and a backslash keeps the next character."""
    items: list[str] = []
    current: list[str] = []
    depth = 0
    quoted = False
    chars = iter(value.lstrip(" "))
    for char in chars:
        if char == "\\":
            current.append(next(chars, ""))
        elif char == '"':
            quoted = not quoted
        elif char in "([":
            depth += 1
            current.append(char)
        elif char in ")]":
            depth = max(0, depth - 1)
            current.append(char)
        elif char == "," and not depth and not quoted:
            items.append("".join(current))
            current = []
        else:
            current.append(char)
    items.append("".join(current))
    return items


def parse_callerid(value: str) -> tuple[str, str]:
    """(name, number) from `"Name" <num>`, `<num>` or `num`."""
    value = value.strip()
    if "<" in value and value.endswith(">"):
        name, _, number = value[:-1].partition("<")
        return name.strip().strip('"'), number.strip()
    return "", value


def _is_true(value: str) -> bool:
    return value.strip().lower() in {"yes", "true", "y", "t", "1", "on"}


class FakeAmiServer:
    """Serves AMI on 127.0.0.1:<ephemeral>. Use `async with FakeAmiServer(...) as fake:`."""

    def __init__(
        self,
        users: Mapping[str, str] | None = None,
        *,
        write: Mapping[str, Iterable[str]] | None = None,
        read: Mapping[str, Iterable[str]] | None = None,
        extensions: Mapping[str, Iterable[str]] | None = None,
        version: str = VERSION,
    ) -> None:
        self.users = dict(users or {"bridge": "s3cret"})
        self.write = {
            user: frozenset(write[user]) if write and user in write else ALL_WRITE for user in self.users
        }
        # None: the user reads every class (manager.conf `read = all`).
        self.read = {user: frozenset(read[user]) if read and user in read else None for user in self.users}
        # Originate checks that the target extension exists ("Extension does not exist.").
        self.extensions = {ctx: set(ext) for ctx, ext in (extensions or {"bridge-outbound": ["s"]}).items()}
        self.version = version
        self.scripts: dict[str, DialScript] = {}
        self.default_script = DialScript()
        self.silent_actions: set[str] = set()  # lower-case action names received but never answered
        self.accepting = True  # False: accept TCP, then close at once (Asterisk not really there)
        self.on_answer: AnswerHook | None = None
        self.received: list[ReceivedAction] = []
        self.logins: list[tuple[str, bool]] = []  # (username, accepted)
        self.channels: dict[str, FakeChannel] = {}
        self.errors: list[BaseException] = []  # exceptions raised by on_answer
        self.connections = 0
        self._sessions: set[_Session] = set()
        self._tasks: set[asyncio.Task[Any]] = set()
        self._server: asyncio.Server | None = None
        self._channel_seq = itertools.count(1)
        self._changed = asyncio.Condition()
        self._started = time.monotonic()

    # --- lifecycle ---------------------------------------------------------------------------

    @property
    def port(self) -> int:
        assert self._server is not None, "start() first"
        port: int = self._server.sockets[0].getsockname()[1]
        return port

    async def start(self) -> FakeAmiServer:
        self._server = await asyncio.start_server(self._serve, "127.0.0.1", 0)
        return self

    async def close(self) -> None:
        if self._server is not None:
            self._server.close()
        for task in list(self._tasks):
            if task.get_name() != "ami-session":
                task.cancel()
        self.drop_all()
        if self._tasks:
            await asyncio.gather(*self._tasks, return_exceptions=True)
        if self._server is not None:
            await self._server.wait_closed()
            self._server = None

    async def __aenter__(self) -> FakeAmiServer:
        return await self.start()

    async def __aexit__(self, *_: object) -> None:
        await self.close()

    def drop_all(self) -> None:
        """Close every AMI connection, as a crashed or restarted Asterisk would."""
        for session in list(self._sessions):
            session.writer.close()

    # --- test helpers ------------------------------------------------------------------------

    @property
    def open_sessions(self) -> int:
        return len(self._sessions)

    def actions(self, name: str) -> list[ReceivedAction]:
        return [a for a in self.received if a.name.lower() == name.lower()]

    def add_channel(
        self,
        name: str,
        *,
        uniqueid: str | None = None,
        variables: Mapping[str, str] | None = None,
        linkedid: str = "",
        bridge_id: str = "",
    ) -> FakeChannel:
        channel = FakeChannel(
            name=name,
            uniqueid=uniqueid or f"{int(self._started)}.{next(self._channel_seq)}",
            state="Up",
            linkedid=linkedid,
            bridge_id=bridge_id,
        )
        channel.variables.update(variables or {})
        self.channels[name] = channel
        return channel

    def find_channel(self, name_or_uniqueid: str) -> FakeChannel | None:
        """Asterisk's lookup: by name first, then by uniqueid."""
        found = self.channels.get(name_or_uniqueid)
        if found is not None:
            return found
        return next((c for c in self.channels.values() if c.uniqueid == name_or_uniqueid), None)

    async def wait_until(self, predicate: Callable[[], bool], timeout: float = 5.0) -> None:
        async def wait() -> None:
            async with self._changed:
                await self._changed.wait_for(predicate)

        await asyncio.wait_for(wait(), timeout)

    async def emit(self, event: str, fields: Mapping[str, str], privilege: str = "call,all") -> None:
        """Send an event to every logged-in session that asked for events."""
        lines = [f"Event: {event}", f"Privilege: {privilege}", *(f"{k}: {v}" for k, v in fields.items())]
        for session in list(self._sessions):
            if session.username is not None and session.events and self._may_read(session, privilege):
                await self._write(session, lines)

    def _may_read(self, session: _Session, privilege: str) -> bool:
        granted = self.read.get(session.username or "")
        needed = {name.strip() for name in privilege.split(",")} - {"all", ""}
        return granted is None or needed <= granted

    # --- connection handling -----------------------------------------------------------------

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        assert task is not None
        task.set_name("ami-session")
        self._tasks.add(task)
        self.connections += 1
        session = _Session(self.connections, writer)
        self._sessions.add(session)
        try:
            if not self.accepting:
                return
            writer.write(f"Asterisk Call Manager/{self.version}\r\n".encode())
            while True:
                raw = await reader.readuntil(b"\r\n\r\n")
                headers = self._parse(raw.decode("utf-8", "replace"))
                if not headers:
                    continue
                if not await self._handle(session, headers):
                    break
        except (asyncio.IncompleteReadError, ConnectionError, asyncio.LimitOverrunError):
            pass
        finally:
            self._sessions.discard(session)
            writer.close()
            with contextlib.suppress(ConnectionError):
                await writer.wait_closed()
            self._tasks.discard(task)
            await self._notify()

    @staticmethod
    def _parse(text: str) -> Headers:
        headers: Headers = {}
        for line in text.split("\r\n"):
            if not line:
                continue
            key, sep, value = line.partition(":")
            if not sep:
                continue  # Asterisk ignores a line without a colon
            key, value = key.strip(), value.lstrip(" ")
            previous = headers.get(key)
            if previous is None:
                headers[key] = value
            elif isinstance(previous, list):
                previous.append(value)
            else:
                headers[key] = [previous, value]
        return headers

    async def _write(self, session: _Session, lines: list[str]) -> None:
        if session.writer.is_closing():
            return
        session.writer.write(("\r\n".join(lines) + "\r\n\r\n").encode())
        with contextlib.suppress(ConnectionError):
            await session.writer.drain()

    async def _reply(
        self, session: _Session, action: ReceivedAction, response: str, message: str | None, *extra: str
    ) -> None:
        lines = [f"Response: {response}"]
        if action.get("ActionID"):
            lines.append(f"ActionID: {action.get('ActionID')}")
        if message is not None:
            lines.append(f"Message: {message}")
        await self._write(session, [*lines, *extra])

    async def _error(self, session: _Session, action: ReceivedAction, message: str) -> bool:
        await self._reply(session, action, "Error", message)
        return True

    async def _notify(self) -> None:
        async with self._changed:
            self._changed.notify_all()

    # --- actions -----------------------------------------------------------------------------

    async def _handle(self, session: _Session, headers: Headers) -> bool:
        """Answer one action; False closes the connection."""
        raw_name = headers.get("Action") or next((v for k, v in headers.items() if k.lower() == "action"), "")
        name = raw_name if isinstance(raw_name, str) else raw_name[0]
        action = ReceivedAction(name, headers, session.number, session.username)
        self.received.append(action)
        await self._notify()
        lowered = name.lower()
        if lowered in self.silent_actions:
            return True
        if lowered == "login":
            return await self._login(session, action)
        if session.username is None and lowered not in {"logoff", "challenge"}:
            return await self._error(session, action, "Permission denied")
        if lowered not in ACTION_CLASSES:
            return await self._error(
                session,
                action,
                f"Invalid/unknown command: {name}. Use Action: ListCommands to show available commands.",
            )
        needed = ACTION_CLASSES[lowered]
        granted = self.write.get(session.username or "", frozenset())
        if needed and not needed & granted:
            return await self._error(session, action, "Permission denied")
        handler = getattr(self, f"_action_{lowered}")
        keep_open: bool = await handler(session, action)
        return keep_open

    async def _login(self, session: _Session, action: ReceivedAction) -> bool:
        username, secret = action.get("Username"), action.get("Secret")
        if action.get("AuthType"):
            return await self._error(session, action, "Fake AMI: only plain-text Login is supported")
        accepted = username in self.users and self.users[username] == secret
        self.logins.append((username, accepted))
        if not accepted:
            await self._reply(session, action, "Error", "Authentication failed")
            await self._notify()
            return False  # Asterisk closes the session after a failed login
        session.username = username
        session.events = action.get("Events").lower() not in {"off", "no", "false", "0"}
        await self._reply(session, action, "Success", "Authentication accepted")
        if session.events and self._may_read(session, "system,all"):
            uptime = str(int(time.monotonic() - self._started))
            await self._write(
                session,
                [
                    "Event: FullyBooted",
                    "Privilege: system,all",
                    f"Uptime: {uptime}",
                    f"LastReload: {uptime}",
                    "Status: Fully Booted",
                ],
            )
        await self._notify()
        return True

    async def _action_logoff(self, session: _Session, action: ReceivedAction) -> bool:
        await self._reply(session, action, "Goodbye", "Thanks for all the fish.")
        return False

    async def _action_ping(self, session: _Session, action: ReceivedAction) -> bool:
        await self._reply(session, action, "Success", None, "Ping: Pong", f"Timestamp: {time.time():.6f}")
        return True

    async def _action_originate(self, session: _Session, action: ReceivedAction) -> bool:
        channel_id = action.get("ChannelId")
        dial = action.get("Channel")
        priority, timeout = action.get("Priority"), action.get("Timeout")
        context, exten = action.get("Context"), action.get("Exten")
        if len(channel_id) > MAX_UNIQUEID:
            return await self._error(session, action, f"Uniqueid length exceeds maximum of {MAX_UNIQUEID}")
        if not dial:
            return await self._error(session, action, "Channel not specified")
        if priority and not priority.isdigit():
            return await self._error(session, action, "Invalid priority")
        if timeout and not re.match(r"\s*[-+]?\d", timeout):  # sscanf("%30d") needs a leading integer
            return await self._error(session, action, "Invalid timeout")
        if "/" not in dial:
            return await self._error(session, action, "Invalid channel")
        # Stricter than Asterisk from here: what the bridge must always send.
        if action.get("Application"):
            return await self._error(session, action, "Fake AMI: the bridge originates into Context/Exten")
        if not (context and exten and priority):
            return await self._error(
                session, action, "Originate with 'Exten' requires 'Context' and 'Priority'"
            )
        if not _is_true(action.get("Async")):
            return await self._error(session, action, "Fake AMI: Async must be true")
        if not channel_id:
            return await self._error(session, action, "Fake AMI: ChannelId is required")
        if not timeout.isdigit() or int(timeout) < 1000:
            return await self._error(
                session, action, "Fake AMI: Timeout must be whole milliseconds (>= 1000)"
            )
        variables: dict[str, str] = {}
        for header in action.getlist("Variable"):
            for item in split_variable_header(header):
                var, sep, value = item.partition("=")
                if not sep or not var:
                    return await self._error(session, action, f"Fake AMI: malformed Variable {item!r}")
                variables[var] = value
        if exten not in self.extensions.get(context, set()):
            return await self._error(session, action, "Extension does not exist.")
        destination = dial.partition("/")[2].partition("@")[0]
        script = self.scripts.get(destination, self.default_script)
        if script.outcome is Outcome.PERMISSION_DENIED:
            return await self._error(session, action, "Permission denied")
        if script.outcome is Outcome.DROP_BEFORE_ACK:
            self.drop_all()
            return False
        await self._reply(session, action, "Success", "Originate successfully queued")
        task = asyncio.get_running_loop().create_task(
            self._dial(session, action, script, variables), name="ami-dial"
        )
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)
        return True

    async def _dial(
        self, session: _Session, action: ReceivedAction, script: DialScript, variables: dict[str, str]
    ) -> None:
        dial, channel_id = action.get("Channel"), action.get("ChannelId")
        tech, _, data = dial.partition("/")
        cid_name, cid_num = parse_callerid(action.get("CallerID"))
        response = {
            "Context": action.get("Context"),
            "Exten": action.get("Exten"),
            "CallerIDNum": cid_num or "<unknown>",
            "CallerIDName": cid_name or "<unknown>",
        }
        if script.outcome is Outcome.FAIL or self.find_channel(channel_id) is not None:
            await asyncio.sleep(script.delay)  # nothing was created (or the uniqueid is taken)
            await self._originate_response(action, "Failure", dial, 0, response)
            return
        device = data.partition("@")[2] or data.partition("@")[0]
        name = f"{tech}/{device}-{next(self._channel_seq):08x}"
        channel = FakeChannel(
            name, channel_id, dict(variables), cid_num or "<unknown>", cid_name or "<unknown>"
        )
        self.channels[name] = channel
        await self.emit("Newchannel", self._snapshot(channel, "0"))
        if script.outcome is Outcome.NO_ANSWER:
            channel.state = "Ringing"
            await self.emit("Newstate", self._snapshot(channel, "5"))
        await asyncio.sleep(script.delay)
        if script.outcome is Outcome.DROP:
            self.drop_all()
            return
        if script.outcome is Outcome.SILENT:
            return
        if script.outcome is Outcome.ANSWER:
            channel.state, channel.context, channel.exten = "Up", action.get("Context"), action.get("Exten")
            await self.emit("Newstate", self._snapshot(channel, "6"))
            await self._originate_response(action, "Success", name, 4, response)
            if self.on_answer is not None:
                try:
                    result = self.on_answer(channel_id, dict(variables))
                    if inspect.isawaitable(result):
                        await result
                except Exception as exc:  # surfaced to the test through `errors`
                    self.errors.append(exc)
            return
        reason, cause = _FAILURES[script.outcome]
        await self._hang_up(channel, cause)
        await self._originate_response(action, "Failure", dial, reason, response)

    async def _originate_response(
        self, action: ReceivedAction, result: str, channel: str, reason: int, fields: dict[str, str]
    ) -> None:
        event = {"ActionID": action.get("ActionID"), "Response": result, "Channel": channel}
        event |= {"Context": fields["Context"], "Exten": fields["Exten"], "Reason": str(reason)}
        event |= {"Uniqueid": action.get("ChannelId"), "CallerIDNum": fields["CallerIDNum"]}
        event["CallerIDName"] = fields["CallerIDName"]
        await self.emit("OriginateResponse", event)
        await self._notify()

    @staticmethod
    def _snapshot(channel: FakeChannel, state: str) -> dict[str, str]:
        return {
            "Channel": channel.name,
            "ChannelState": state,
            "ChannelStateDesc": channel.state,
            "CallerIDNum": channel.caller_num,
            "CallerIDName": channel.caller_name,
            "ConnectedLineNum": "<unknown>",
            "ConnectedLineName": "<unknown>",
            "Language": "en",
            "AccountCode": "",
            "Context": channel.context,
            "Exten": channel.exten,
            "Priority": "1",
            "Uniqueid": channel.uniqueid,
            "Linkedid": channel.linkedid or channel.uniqueid,
        }

    async def _hang_up(self, channel: FakeChannel, cause: int) -> None:
        channel.hangup_cause = cause
        self.channels.pop(channel.name, None)
        state = {"Down": "0", "Ringing": "5", "Up": "6"}.get(channel.state, "0")
        event = self._snapshot(channel, state)
        event |= {"Cause": str(cause), "Cause-txt": CAUSE_TEXT.get(cause, "Unknown")}
        await self.emit("Hangup", event)
        await self._notify()

    async def _action_hangup(self, session: _Session, action: ReceivedAction) -> bool:
        target, cause = action.get("Channel"), action.get("Cause")
        if not target:
            return await self._error(session, action, "No channel specified")
        if target.startswith("/"):
            return await self._error(session, action, "Fake AMI: the bridge never hangs up by regex")
        if cause and not (cause.isdigit() and 0 <= int(cause) <= 127):
            return await self._error(session, action, "Fake AMI: Cause must be a Q.850 number")
        channel = self.find_channel(target)
        if channel is None:
            return await self._error(session, action, "No such channel")
        await self._reply(session, action, "Success", "Channel Hungup")
        await self._hang_up(channel, int(cause or "16"))
        return True

    async def _action_redirect(self, session: _Session, action: ReceivedAction) -> bool:
        target, priority = action.get("Channel"), action.get("Priority")
        context, exten = action.get("Context"), action.get("Exten")
        if not target:
            return await self._error(session, action, "Channel not specified")
        if priority and not priority.isdigit():
            return await self._error(session, action, "Invalid priority")
        if not (context and exten and priority):
            return await self._error(session, action, "Fake AMI: Redirect needs Context, Exten and Priority")
        channel = self.find_channel(target)
        if channel is None:
            return await self._error(session, action, f"Channel does not exist: {target}")
        channel.redirects.append((context, exten, priority))
        channel.context, channel.exten = context, exten
        await self._reply(session, action, "Success", "Redirect successful")
        await self._notify()
        return True

    async def _action_playdtmf(self, session: _Session, action: ReceivedAction) -> bool:
        digit, duration = action.get("Digit"), action.get("Duration")
        channel = self.find_channel(action.get("Channel")) if action.get("Channel") else None
        if channel is None:
            return await self._error(session, action, "Channel not found")
        if not digit:
            return await self._error(session, action, "No digit specified")
        if duration and not duration.isdigit():
            return await self._error(session, action, "Could not convert Duration parameter")
        if len(digit) != 1:
            return await self._error(session, action, "Fake AMI: PlayDTMF plays only the first character")
        channel.dtmf.append(digit)
        await self._reply(session, action, "Success", "DTMF successfully queued")
        await self._notify()
        return True

    async def _action_getvar(self, session: _Session, action: ReceivedAction) -> bool:
        variable, target = action.get("Variable"), action.get("Channel")
        if not variable:
            return await self._error(session, action, "No variable specified")
        channel = self.find_channel(target) if target else None
        if target and channel is None:
            return await self._error(session, action, "No such channel")
        value = (channel.read_variable(variable) if channel is not None else None) or ""
        await self._reply(session, action, "Success", None, f"Variable: {variable}", f"Value: {value}")
        return True

    async def _action_status(self, session: _Session, action: ReceivedAction) -> bool:
        """The reply and its event list go to the asking session whatever its read classes (manager.c
        writes them with astman_append, not as events)."""
        target = action.get("Channel")
        if target:
            found = self.find_channel(target)
            if found is None:
                return await self._error(session, action, "No such channel")
            listed = [found]
        else:
            listed = list(self.channels.values())
        names = [n.strip() for n in action.get("Variables").split(",") if n.strip()]
        await self._reply(session, action, "Success", "Channel status will follow", "EventList: start")
        action_id = [f"ActionID: {action.get('ActionID')}"] if action.get("ActionID") else []
        for channel in listed:
            fields = self._snapshot(channel, {"Down": "0", "Ringing": "5", "Up": "6"}.get(channel.state, "0"))
            lines = ["Event: Status", "Privilege: Call", *(f"{k}: {v}" for k, v in fields.items())]
            lines += [f"Type: {channel.name.partition('/')[0]}", f"BridgeID: {channel.bridge_id}"]
            for name in names:
                value = channel.read_variable(name)
                lines.append(f"Variable: {name}={'(null)' if value is None else value}")
            await self._write(session, [*lines, *action_id])
        count = str(len(listed))
        complete = ["Event: StatusComplete", *action_id, "EventList: Complete"]
        await self._write(session, [*complete, f"ListItems: {count}", f"Items: {count}"])
        return True
