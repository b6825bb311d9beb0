"""inferd's one tool-call parser: a model's text in, content and calls out.

Every tool call inferd generates has the Hermes shape (the format of Qwen, Hermes and
SmolLM3 chat templates, and of inferd's own tool prompt)::

    Some text, perhaps.<tool_call>
    {"name": "get_weather", "arguments": {"location": "Paris"}}
    </tool_call>

An answer that begins with ``{`` is one call written without the tags (Qwen2.5-Coder's way).
The grammar (``serving/tools.py``) guarantees the shape; ``ToolCallStream`` reads it as it
streams and gives out events: ``Text`` for content (never a piece of a tag: a suffix that could
begin ``<tool_call>`` is held back until it cannot), ``CallStart`` (id and name, as soon as the
name is complete) and ``CallArguments`` (the arguments' JSON, fragment by fragment). Both the
streaming and the whole-answer paths of every dialect use it; ``parse`` is the whole-answer
form.
"""

from __future__ import annotations

import json
import re
import uuid
from dataclasses import dataclass

OPEN, CLOSE = "<tool_call>", "</tool_call>"

# a call's head, matched once the first character of its arguments has come
_HEAD = re.compile(r'\s*\{\s*"name"\s*:\s*"((?:[^"\\]|\\.)*)"\s*,\s*"arguments"\s*:\s*(?=\S)')


@dataclass(frozen=True, slots=True)
class Text:
    text: str


@dataclass(frozen=True, slots=True)
class CallStart:
    index: int
    id: str
    name: str


@dataclass(frozen=True, slots=True)
class CallArguments:
    index: int
    text: str


Event = Text | CallStart | CallArguments


def new_id(prefix: str = "call_") -> str:
    return f"{prefix}{uuid.uuid4().hex[:24]}"


def _held(text: str, tag: str) -> int:
    """How many trailing characters of ``text`` could be the start of ``tag``."""
    for n in range(min(len(tag) - 1, len(text)), 0, -1):
        if text.endswith(tag[:n]):
            return n
    return 0


class ToolCallStream:
    """Feed text as it comes (``feed``), then ``finish``; each returns the events it completes."""

    def __init__(self, id_prefix: str = "call_"):
        self.id_prefix = id_prefix
        self.buffer = ""  # text received but not given out yet
        self.calls = 0  # calls completed or started
        self.in_call = False
        self.args_at: int | None = None  # where the open call's arguments begin in the buffer
        self.sent = 0  # characters of the open call's arguments given out
        self.fresh = True  # nothing received yet
        self.bare = False  # the answer is one call without tags

    def feed(self, piece: str) -> list[Event]:
        self.buffer += piece
        out: list[Event] = []
        while True:
            if self.fresh and self.buffer:  # an answer that opens with "{" is one call without tags
                self.fresh = False
                if self.buffer.startswith("{"):
                    self.in_call = self.bare = True
            if not self.in_call:
                at = self.buffer.find(OPEN)
                if at < 0:
                    self._text(out, len(self.buffer) - _held(self.buffer, OPEN))
                    return out
                self._text(out, at)
                self.buffer = self.buffer[len(OPEN):]
                self.in_call, self.args_at, self.sent = True, None, 0
            end = -1 if self.bare else self.buffer.find(CLOSE)
            body = self.buffer if end < 0 else self.buffer[:end]
            if self.args_at is None:
                head = _HEAD.match(body)
                if head is None:
                    if end < 0:
                        return out
                    # not a call after all (the grammar never lets this happen): keep it as text
                    out.append(Text(OPEN + self.buffer[:end + len(CLOSE)]))
                    self.buffer, self.in_call = self.buffer[end + len(CLOSE):], False
                    continue
                self.args_at = head.end()
                out.append(CallStart(self.calls, new_id(self.id_prefix), json.loads(f'"{head.group(1)}"')))
            arguments = body[self.args_at:]
            if end < 0:  # what may still be the wrapper's closing brace or the closing tag stays back
                arguments = arguments[:len(arguments) - _held(arguments, CLOSE)].rstrip()[:-1]
            else:
                arguments = arguments.rstrip()
                arguments = arguments[:-1].rstrip() if arguments.endswith("}") else arguments
            self._arguments(out, arguments)
            if end < 0:
                return out
            self.buffer = self.buffer[end + len(CLOSE):]
            self.in_call, self.calls = False, self.calls + 1

    def finish(self) -> list[Event]:
        """The rest: held-back text, or the open call's remaining arguments (a cut-off answer)."""
        out: list[Event] = []
        if self.in_call:
            if self.args_at is not None:
                rest = self.buffer[self.args_at:]
                if self.bare and _whole(self.buffer):  # the wrapper's closing brace is not an argument
                    rest = rest.rstrip()[:-1].rstrip()
                self._arguments(out, rest)
                self.calls += 1
        else:
            self._text(out, len(self.buffer))
        self.buffer, self.in_call = "", False
        return out

    def _text(self, out: list[Event], upto: int) -> None:
        text, self.buffer = self.buffer[:upto], self.buffer[upto:]
        if self.calls and not self.in_call:
            text = text.lstrip()  # the line breaks between calls are not content
        if text:
            out.append(Text(text))

    def _arguments(self, out: list[Event], available: str) -> None:
        new = available[self.sent:]
        if new:
            self.sent += len(new)
            out.append(CallArguments(self.calls, new))


def _whole(text: str) -> bool:
    try:
        json.loads(text)
    except ValueError:
        return False
    return True


@dataclass(slots=True)
class ParsedCall:
    id: str
    name: str
    arguments: str = ""


def parse(text: str, id_prefix: str = "call_") -> tuple[str, list[ParsedCall]]:
    """A whole answer's content (stripped when there are calls) and its calls, in order."""
    stream = ToolCallStream(id_prefix)
    content: list[str] = []
    calls: list[ParsedCall] = []
    for event in stream.feed(text) + stream.finish():
        if isinstance(event, Text):
            content.append(event.text)
        elif isinstance(event, CallStart):
            calls.append(ParsedCall(event.id, event.name))
        else:
            calls[event.index].arguments += event.text
    joined = "".join(content)
    return (joined.strip() if calls else joined), calls
