"""Sessions held in memory: who has entered the setup code, and their CSRF token.

Every visitor gets a session on the first page (locked), so even the code
form carries a CSRF token; entering the code replaces it with a fresh
unlocked one, so an id planted before the unlock is worth nothing after it.
Sessions die with the daemon: a restart asks for the code again.
"""

from __future__ import annotations

import hmac
import secrets
import time
from collections import OrderedDict
from dataclasses import dataclass, field

#: The cookie's name.
COOKIE = "hublink_session"
#: An unlocked session lasts this long without a visit (seconds).
IDLE_TIMEOUT = 12 * 3600.0
#: Locked sessions cost nothing to make, so only the newest are kept.
MAX_LOCKED = 256
#: Unlocked sessions need the code; a bound still keeps memory flat.
MAX_UNLOCKED = 64


@dataclass
class Session:
    """One browser's session."""

    id: str
    csrf: str
    unlocked: bool
    last_seen: float
    #: A message for the next page, after a form post without JavaScript.
    notice: str | None = None
    notice_error: bool = False
    doctor: dict[str, object] | None = field(default=None, repr=False)

    def csrf_ok(self, token: str | None) -> bool:
        """Whether ``token`` is this session's CSRF token (in constant time)."""
        return token is not None and hmac.compare_digest(token.encode(), self.csrf.encode())


class SessionStore:
    """The sessions, oldest first; bounded and expiring."""

    def __init__(self) -> None:
        self._locked: OrderedDict[str, Session] = OrderedDict()
        self._unlocked: OrderedDict[str, Session] = OrderedDict()

    def get(self, session_id: str | None) -> Session | None:
        """The live session with this id, or None."""
        if not session_id:
            return None
        now = time.monotonic()
        session = self._unlocked.get(session_id)
        if session is not None:
            if now - session.last_seen > IDLE_TIMEOUT:
                del self._unlocked[session_id]
                return None
            session.last_seen = now
            self._unlocked.move_to_end(session_id)
            return session
        return self._locked.get(session_id)

    def new_locked(self) -> Session:
        """A fresh session that has not entered the code."""
        return self._add(self._locked, MAX_LOCKED, unlocked=False)

    def unlock(self, previous: Session | None) -> Session:
        """A fresh unlocked session replacing ``previous`` (against session fixation)."""
        if previous is not None:
            self._locked.pop(previous.id, None)
            self._unlocked.pop(previous.id, None)
        return self._add(self._unlocked, MAX_UNLOCKED, unlocked=True)

    def _add(self, table: OrderedDict[str, Session], limit: int, *, unlocked: bool) -> Session:
        session = Session(
            id=secrets.token_urlsafe(32),
            csrf=secrets.token_urlsafe(32),
            unlocked=unlocked,
            last_seen=time.monotonic(),
        )
        table[session.id] = session
        while len(table) > limit:
            table.popitem(last=False)
        return session
