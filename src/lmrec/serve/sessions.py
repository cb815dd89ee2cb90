"""Conversation sessions of a CRS run: turns kept in memory, dropped after ``ttl`` seconds without a message (on
lmrec's clock, :mod:`lmrec.clock`)."""

from __future__ import annotations

import secrets
import threading
from dataclasses import dataclass, field

from lmrec import clock
from lmrec.data.conversations import Turn
from lmrec.errors import LmrecError


class SessionNotFound(LmrecError):
    """An unknown or expired session id."""


@dataclass
class Session:
    session_id: str
    model: str
    last_seen: float  # lmrec.clock.now() at its last request
    turns: list[Turn] = field(default_factory=list)


class SessionStore:
    """At most ``max_sessions`` live sessions; one idle for ``ttl`` seconds is gone (the oldest goes first when
    full). Thread-safe."""

    def __init__(self, ttl: float = 1800.0, max_sessions: int = 10_000, max_turns: int = 200):
        self.ttl, self.max_sessions, self.max_turns = ttl, max_sessions, max_turns
        self._sessions: dict[str, Session] = {}
        self._lock = threading.Lock()

    def create(self, model: str) -> Session:
        with self._lock:
            self._expire()
            if len(self._sessions) >= self.max_sessions:
                oldest = min(self._sessions.values(), key=lambda s: s.last_seen)
                del self._sessions[oldest.session_id]
            session = Session(secrets.token_urlsafe(12), model, clock.now())
            self._sessions[session.session_id] = session
            return session

    def get(self, session_id: str, model: str) -> Session:
        with self._lock:
            self._expire()
            session = self._sessions.get(session_id)
            if session is None or session.model != model:
                raise SessionNotFound(f"no session {session_id[:40]!r} for {model!r} (unknown, or expired after "
                                      f"{self.ttl:.0f} s without a message)")
            session.last_seen = clock.now()
            return session

    def add(self, session: Session, turn: Turn) -> list[Turn]:
        """Append ``turn``; returns the turns so far (a copy: other requests may add to the session meanwhile)."""
        with self._lock:
            if len(session.turns) >= self.max_turns:
                raise LmrecError(f"session {session.session_id!r} has {self.max_turns} turns: start a new one")
            session.turns.append(turn)
            return list(session.turns)

    def turns(self, session: Session) -> list[Turn]:
        with self._lock:
            return list(session.turns)

    def delete(self, session_id: str, model: str) -> None:
        self.get(session_id, model)
        with self._lock:
            self._sessions.pop(session_id, None)

    def _expire(self) -> None:
        now = clock.now()
        for key in [k for k, s in self._sessions.items() if now - s.last_seen > self.ttl]:
            del self._sessions[key]
