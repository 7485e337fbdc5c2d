"""Per-conversation memory for the server: one NammLlama context, many conversations.

A conversation is identified by its messages: a request whose messages extend a stored
conversation (same messages, then new ones) continues it, with that conversation's KV memory,
NAMM state and cold store. The conversation in the context is "active"; up to `max_sessions`
others wait in RAM as saved states; beyond that the least recently used go to session files on
disk (never dropped) and come back from there when continued.
"""

from __future__ import annotations

import hashlib
import json
import time
from collections import OrderedDict
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any


def _key(message: dict) -> tuple[str, str]:
    content = message.get("content")
    if not isinstance(content, str):
        content = json.dumps(content, sort_keys=True)
    return (str(message.get("role")), content)


@dataclass
class Conversation:
    id: str
    messages: list[tuple[str, str]]  # (role, content) of what the memory holds, reply included
    state: Any = None  # NammLlamaState while parked in RAM
    path: Path | None = None  # session file while parked on disk
    last_used: float = field(default_factory=time.monotonic)


class SessionStore:
    def __init__(self, llm: Any, max_sessions: int, folder: Path) -> None:
        self.llm = llm
        self.max_sessions = max_sessions
        self.folder = folder
        self.folder.mkdir(parents=True, exist_ok=True)
        self.active: Conversation | None = None
        self.parked: OrderedDict[str, Conversation] = OrderedDict()  # oldest first
        self.counter = 0

    def _match(self, wanted: list[tuple[str, str]]) -> Conversation | None:
        """The stored conversation whose messages are the longest prefix of `wanted`."""
        best, best_len = None, 0
        for conv in [self.active, *self.parked.values()]:
            if conv is None:
                continue
            n = len(conv.messages)
            if best_len < n <= len(wanted) and wanted[:n] == conv.messages:
                best, best_len = conv, n
        return best

    def open(self, messages: list[dict]) -> Conversation:
        """Make the conversation these messages continue the active one (a new one if none)."""
        wanted = [_key(m) for m in messages]
        conv = self._match(wanted[:-1]) if len(wanted) > 1 else None
        if conv is not None and conv is self.active:
            return conv
        self._park_active()
        if conv is None:
            self.counter += 1
            digest = hashlib.sha1(json.dumps(wanted[:2]).encode()).hexdigest()[:8]
            conv = Conversation(id=f"conv-{self.counter}-{digest}", messages=[])
            self.llm.reset(stats=True)
        else:
            self.parked.pop(conv.id)
            if conv.state is not None:
                self.llm.load_state(conv.state)
            else:
                self.llm.load_session(conv.path)
                conv.path.unlink(missing_ok=True)
            conv.state, conv.path = None, None
        self.active = conv
        return conv

    def close_turn(self, conv: Conversation, messages: list[dict], reply: dict | None) -> None:
        """The active conversation now holds these messages and the reply."""
        conv.messages = [_key(m) for m in messages]
        if reply is not None:
            conv.messages.append(_key(reply))
        conv.last_used = time.monotonic()

    def park_active(self) -> None:
        self._park_active()

    def _park_active(self) -> None:
        conv, self.active = self.active, None
        if conv is None or not conv.messages:
            return
        conv.state = self.llm.save_state()
        self.parked[conv.id] = conv
        # RAM holds up to max_sessions - 1 parked conversations (the active one is the other)
        in_ram = [c for c in self.parked.values() if c.state is not None]
        for old in in_ram[: max(0, len(in_ram) - max(self.max_sessions - 1, 0))]:
            self._to_disk(old)

    def _to_disk(self, conv: Conversation) -> None:
        """Save a parked conversation to a session file (the context is borrowed for it)."""
        current = self.llm.save_state()
        self.llm.load_state(conv.state)
        conv.path = self.llm.save_session(self.folder / f"{conv.id}.session")
        conv.state = None
        self.llm.load_state(current)

    def describe(self) -> dict:
        parked = list(self.parked.values())
        return {
            "active": None if self.active is None else self.active.id,
            "in_ram": [c.id for c in parked if c.state is not None],
            "on_disk": [c.id for c in parked if c.path is not None],
            "max_sessions": self.max_sessions,
        }
