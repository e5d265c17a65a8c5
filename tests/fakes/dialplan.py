"""A strict model of Asterisk's dialplan, for exactly what asterisk-sample-conf/extensions.conf uses.

It follows Asterisk 22's sources: pbx_config.c (loading), extension pattern matching, main/pbx_builtins.c
(Set, GotoIf, Goto, Hangup), app_dial (DIALSTATUS, the `g` option, and the variables the dialed channel
inherits: `_X` as `X`, `__X` as `__X`), app_amd (AMDSTATUS, AMDCAUSE), app_stasis (STASISSTATUS; what
the ARI app then does is the ARI tests' business), func_module (IFMODULE), funcs/func_strings.c (FILTER,
LEN), func_curl.c, func_json.c, func_callerid.c, func_uri.c and func_uuid.c; the string rules are in
`tests.fakes.asterisk_text`. Variables are read by name whatever their inheritance prefix (main/chanvars.c
`ast_var_name`), and an application that is not loaded hangs the channel up (pbx.c: "No application").
Whatever the samples do not use raises `Unmodelled`, so a sample change that leaves this ground fails a
test instead of being checked by guesswork.
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any

from tests.fakes.asterisk_conf import read_conf
from tests.fakes.asterisk_text import (
    Unmodelled,
    c_string,
    check_condition,
    closing,
    decoded,
    encoded_char,
    evaluate_expression,
    filter_allowed,
    parse_variable_name,
    separate_args,
    substring,
)

URI_UNRESERVED = frozenset(b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_.!~*'()")
CURLOPT_KEYS = frozenset({"conntimeout", "httptimeout", "httpheader", "dnstimeout", "useragent"})


class NoSuchExtension(Exception):
    pass


# --- loading ----------------------------------------------------------------------------------------


@dataclass
class Priority:
    label: str | None
    app: str
    data: str
    line: int


@dataclass
class Extension:
    pattern: str
    priorities: list[Priority] = field(default_factory=list)

    def index_of(self, target: str) -> int:
        if target.isdigit():
            if not 1 <= int(target) <= len(self.priorities):
                raise Unmodelled(f"{self.pattern}: no priority {target}")
            return int(target) - 1
        for index, priority in enumerate(self.priorities):
            if priority.label == target:
                return index
        raise Unmodelled(f"{self.pattern}: no label {target!r}")


@dataclass
class Context:
    name: str
    extensions: list[Extension] = field(default_factory=list)
    includes: list[str] = field(default_factory=list)


@dataclass
class Dialplan:
    contexts: dict[str, Context]
    globals: dict[str, str]

    @classmethod
    def load(cls, name: str = "extensions.conf") -> Dialplan:
        contexts: dict[str, Context] = {}
        globals_: dict[str, str] = {}
        for line in read_conf(name):
            if line.section == "globals":
                if "$" in line.value:
                    raise Unmodelled(f"line {line.number}: substitution in [globals]")
                globals_[line.key] = line.value
                continue
            context = contexts.setdefault(line.section, Context(line.section))
            if line.key == "include":
                context.includes.append(line.value)
            elif line.key in {"exten", "same"}:
                _add_priority(context, line.key, line.value, line.number)
            else:
                raise Unmodelled(f"line {line.number}: {line.key!r} in a context")
        return cls(contexts, globals_)

    def find(self, context: str, exten: str) -> tuple[str, Extension]:
        """The extension `exten` runs in `context`: its own extensions first, then its includes."""
        found = self.contexts.get(context)
        if found is None:
            raise NoSuchExtension(f"no context {context!r}")
        matching = [e for e in found.extensions if pattern_matches(e.pattern, exten)]
        if len(matching) > 1:
            raise Unmodelled(f"{context}: several patterns match {exten!r} (Asterisk ranks them)")
        if matching:
            return context, matching[0]
        for include in found.includes:
            try:
                return self.find(include, exten)
            except NoSuchExtension:
                continue
        raise NoSuchExtension(f"{exten!r} matches nothing in {context!r}")


def _add_priority(context: Context, kind: str, value: str, number: int) -> None:
    if kind == "exten":
        pattern, _, value = value.partition(",")
        context.extensions.append(Extension(pattern.strip()))
    elif not context.extensions:
        raise Unmodelled(f"line {number}: `same` before any `exten`")
    priority, _, application = value.partition(",")
    priority = priority.strip()
    label = None
    if "(" in priority:
        priority, _, rest = priority.partition("(")
        label = rest.partition(")")[0]
    extension = context.extensions[-1]
    expected = "1" if not extension.priorities else "n"
    if priority != expected:
        raise Unmodelled(f"line {number}: priority {priority!r} (the model numbers 1, n, n, ...)")
    app, paren, data = application.strip().partition("(")
    if paren:
        closing = data.rfind(")")
        data = data[:closing] if closing >= 0 else data
    extension.priorities.append(Priority(label, app.strip(), data, number))


def pattern_matches(pattern: str, exten: str) -> bool:
    if not pattern.startswith("_"):
        return pattern == exten
    regex: list[str] = []
    chars = iter(pattern[1:])
    for char in chars:
        upper = char.upper()
        if upper == "X":
            regex.append("[0-9]")
        elif upper == "Z":
            regex.append("[1-9]")
        elif upper == "N":
            regex.append("[2-9]")
        elif char == ".":
            regex.append(".+")
        elif char == "!":
            regex.append(".*")
        elif char == "-":
            continue  # ignored in patterns, for readability
        elif char == "[":
            members: list[str] = []
            for member in chars:
                if member == "]":
                    break
                members.append(member if member == "-" else re.escape(member))
            else:
                raise Unmodelled(f"unterminated [ in pattern {pattern!r}")
            regex.append("[" + "".join(members) + "]")
        else:
            regex.append(re.escape(char))
    return re.fullmatch("".join(regex), exten, re.DOTALL) is not None


# --- running a channel through the dialplan ----------------------------------------------------------


@dataclass(frozen=True)
class HttpRequest:
    url: str
    body: bytes | None
    headers: tuple[str, ...]
    options: dict[str, str]


@dataclass
class Channel:
    exten: str
    caller_num: str = ""
    caller_name: str = ""
    uniqueid: str = "1717171717.42"
    variables: dict[str, str] = field(default_factory=dict)
    uuids: Iterator[str] = field(default_factory=lambda: iter(["5a1c2f0e-3b4d-4e6f-8a9b-0c1d2e3f4a5b"]))


@dataclass
class Run:
    requests: list[HttpRequest] = field(default_factory=list)
    dials: list[str] = field(default_factory=list)
    inherited: list[dict[str, str]] = field(default_factory=list)  # per dial: the dialed channel's variables
    hangup_cause: str | None = None
    missing_application: str | None = None  # hung up: this application is not loaded
    stasis: list[list[str]] = field(default_factory=list)  # each Stasis(): the app name, then its args


Http = Callable[[HttpRequest], str | None]  # the response body; None: refused or timed out
Dialer = Callable[[str], str]  # dial string -> DIALSTATUS
Amd = Callable[[], tuple[str, str]]  # what AMD() concludes: (AMDSTATUS, AMDCAUSE)
# What Stasis(app,args...) ends with: STASISSTATUS (app_stasis.c), FAILED when the app is not registered
# (no ARI client connected). The application's own work (continue, hangup) is the ARI tests' business.
StasisApp = Callable[[list[str]], str]


def unprefixed(name: str) -> str:
    """chanvars.c `ast_var_name`: a variable's name without its inheritance prefix."""
    return name[2:] if name.startswith("__") else name[1:] if name.startswith("_") else name


def inherited_by_dialed(variables: dict[str, str]) -> dict[str, str]:
    """What a channel created by Dial() inherits (channel.c `ast_channel_inherit_variables`)."""
    found: dict[str, str] = {}
    for name, value in variables.items():
        if name.startswith("__"):
            found[name] = value
        elif name.startswith("_"):
            found[name[1:]] = value
    return found


@dataclass
class Engine:
    plan: Dialplan
    channel: Channel
    http: Http
    dialer: Dialer
    amd: Amd | None = None  # None: app_amd is not loaded (`module show like amd`: 0 modules loaded)
    stasis: StasisApp = field(default=lambda _args: "SUCCESS")
    context: str = ""
    run: Run = field(default_factory=Run)
    curl_options: dict[str, str] = field(default_factory=dict)
    curl_headers: list[str] = field(default_factory=list)

    # --- substitution --------------------------------------------------------------------------

    def substitute(self, text: str) -> str:
        out: list[str] = []
        position = 0
        while True:
            starts = [i for i in (text.find("${", position), text.find("$[", position)) if i >= 0]
            if not starts:
                out.append(text[position:])
                return "".join(out)
            start = min(starts)
            out.append(text[position:start])
            is_expression = text[start + 1] == "["
            end, needs_sub = closing(text, start + 2, is_expression)
            inner = text[start + 2 : end - 1]
            if needs_sub:
                inner = self.substitute(inner)
            out.append(evaluate_expression(inner) if is_expression else self.read(inner))
            position = end

    def read(self, inner: str) -> str:
        name, offset, length = parse_variable_name(inner)
        if "(" in name:
            function, _, args = name.partition("(")
            end = args.rfind(")")
            value = self.call(function, args[:end] if end >= 0 else args)
        else:
            value = self.variable(name)
        return substring(value, offset, length)

    def variable(self, name: str) -> str:
        builtins = {"EXTEN": self.channel.exten, "UNIQUEID": self.channel.uniqueid, "CONTEXT": self.context}
        if name in builtins:
            return builtins[name]
        for stored, value in self.channel.variables.items():
            if unprefixed(stored) == name:
                return value
        return self.plan.globals.get(name, "")

    def set_variable(self, name: str, value: str) -> None:
        """pbx_builtin_setvar_helper: the old variable of that name goes, whatever its prefix."""
        for stored in [n for n in self.channel.variables if unprefixed(n) == unprefixed(name)]:
            del self.channel.variables[stored]
        self.channel.variables[name] = value

    # --- functions -----------------------------------------------------------------------------

    def call(self, function: str, args: str) -> str:
        handler = getattr(self, f"_func_{function.lower()}", None)
        if handler is None or function != function.upper():
            raise Unmodelled(f"function {function}()")
        result: str = handler(args)
        return result

    def _func_callerid(self, args: str) -> str:
        which = separate_args(args, 2, remove_chars=True)[0]
        if which == "name":
            return c_string(self.channel.caller_name)
        if which == "num":
            return c_string(self.channel.caller_num)
        raise Unmodelled(f"CALLERID({which})")

    def _func_filter(self, args: str) -> str:
        parts = separate_args(args, 2, remove_chars=False)
        if len(parts) < 2:
            raise Unmodelled("FILTER without a string (Asterisk logs its usage)")
        allowed = filter_allowed(parts[0])
        return "".join(char for char in parts[1] if ord(char) in allowed)

    def _func_replace(self, args: str) -> str:
        parts = separate_args(args, 3, remove_chars=True)
        if len(parts) < 2 or not parts[0] or not parts[1]:
            raise Unmodelled("REPLACE without a variable or characters (Asterisk logs an error)")
        find = decoded(parts[1])
        replacement = chr(encoded_char(parts[2], 0)[0]) if len(parts) > 2 and parts[2] else ""
        return "".join(replacement if char in find else char for char in self.read(parts[0]))

    def _func_len(self, args: str) -> str:
        return str(len(args))

    def _func_uriencode(self, args: str) -> str:
        return "".join(c if ord(c) in URI_UNRESERVED else f"%{ord(c):02X}" for c in args)

    def _func_ifmodule(self, args: str) -> str:
        if args != "app_amd.so":
            raise Unmodelled(f"IFMODULE({args}) (the model knows which build has app_amd only)")
        return "1" if self.amd is not None else "0"

    def _func_uuid(self, args: str) -> str:
        return next(self.channel.uuids)

    def _func_json_decode(self, args: str) -> str:
        parts = separate_args(args, 4, remove_chars=True)
        if len(parts) != 2:
            raise Unmodelled("JSON_DECODE with a separator or options")
        document = self.read(parts[0])
        try:
            node: Any = json.loads(document.encode("latin-1")) if document else None
        except ValueError:
            return ""  # "Failed to parse as JSON"
        if "." in parts[1]:
            raise Unmodelled("JSON_DECODE of a nested key")
        # jansson (no JSON_DECODE_ANY) wants an object or array; looking a key up in an array finds nothing.
        node = node.get(parts[1]) if isinstance(node, dict) else None
        if isinstance(node, bool):
            return "1" if node else "0"
        if isinstance(node, str):
            return c_string(node)
        if isinstance(node, int) and -(2**31) <= node < 2**31:
            return str(node)
        if node is None:
            return ""
        raise Unmodelled(f"JSON_DECODE of {node!r}")

    def _func_curl(self, args: str) -> str:
        parts = separate_args(args, 2, remove_chars=True)
        if not parts or "\r" in parts[0] or "\n" in parts[0]:
            raise Unmodelled("CURL without a URL, or a URL func_curl refuses")
        body = parts[1].encode("latin-1") if len(parts) > 1 else None
        request = HttpRequest(parts[0], body, tuple(self.curl_headers), dict(self.curl_options))
        self.run.requests.append(request)
        answer = self.http(request)
        return re.sub(r"[\x00-\x20]+$", "", c_string(answer)) if answer else ""  # ast_str_trim_blanks

    def write_function(self, target: str, value: str) -> None:
        function, _, key = target.partition("(")
        key = key.removesuffix(")")
        if function != "CURLOPT":
            raise Unmodelled(f"writing {function}()")
        if key not in CURLOPT_KEYS:
            raise Unmodelled(f"CURLOPT({key}) (Asterisk: 'Unrecognized option')")
        if key == "httpheader":
            self.curl_headers.append(value)
        else:
            self.curl_options[key] = value

    # --- applications --------------------------------------------------------------------------

    def execute(self, context: str, exten: str, limit: int = 100) -> Run:
        self.context, extension = self.plan.find(context, exten)
        self.channel.exten = exten
        index = 0
        for _ in range(limit):
            if index >= len(extension.priorities):
                return self.run  # no next priority: Asterisk hangs the channel up
            priority = extension.priorities[index]
            data = self.substitute(priority.data)
            app = priority.app.lower()
            index += 1
            if app == "noop":
                continue
            if app == "set":
                name, sep, value = data.partition("=")
                if not sep:
                    raise Unmodelled(f"Set without '=' at line {priority.line}")
                if name.endswith(")"):
                    self.write_function(name, value)
                else:
                    self.set_variable(name, value)
            elif app in {"goto", "gotoif"}:
                target = data
                if app == "gotoif":
                    condition, _, branches = data.partition("?")
                    true_branch, _, false_branch = branches.partition(":")
                    target = true_branch if check_condition(condition) else false_branch
                if target:
                    where = target.split(",")
                    if len(where) == 3:
                        self.context, extension = self.plan.find(where[0], where[1])
                        self.channel.exten = where[1]
                    elif len(where) != 1:
                        raise Unmodelled(f"Goto({target})")
                    index = extension.index_of(where[-1])
            elif app == "dial":
                dial_args = separate_args(data, 4, remove_chars=True)
                self.run.dials.append(dial_args[0])
                self.run.inherited.append(inherited_by_dialed(self.channel.variables))
                status = self.dialer(dial_args[0])
                self.set_variable("DIALSTATUS", status)
                options = dial_args[2] if len(dial_args) > 2 else ""
                if status == "ANSWER" and "g" not in options:
                    return self.run  # the bridged call ended: the caller is hung up too
            elif app == "hangup":
                self.run.hangup_cause = data
                return self.run
            elif app == "stasis":
                stasis_args = separate_args(data, 128, remove_chars=True)
                self.run.stasis.append(stasis_args)
                self.set_variable("STASISSTATUS", self.stasis(stasis_args))
            elif app == "amd":
                if self.amd is None:
                    self.run.missing_application = priority.app
                    return self.run
                if data:
                    raise Unmodelled("AMD() with arguments (amd.conf's defaults are modelled)")
                status, cause = self.amd()
                self.set_variable("AMDSTATUS", status)
                self.set_variable("AMDCAUSE", cause)
            else:
                raise Unmodelled(f"application {priority.app} at line {priority.line}")
        raise Unmodelled("more than the step limit: a dialplan loop?")
