"""The status bar's words and the terminal title, from a session's state.

The bar says where you are and what is going on: the server, the
connection (its lag, or why it is down and when the next try is), your
name with its marks (``✓`` an account, ``★`` a server operator), the room
shown, highlights not yet seen there, lines waiting to go out, the running
transfer — and last the room's topic, which the screen cuts to fit. The
title counts the highlights not yet seen in every room.
"""

from __future__ import annotations

from datetime import datetime
from typing import TYPE_CHECKING

from chat.units import plural
from client_tui.attention import Attention
from client_tui.listings import marked

if TYPE_CHECKING:
    from client_tui.session import ChatSession

#: How a state reads in the bar, where its name alone would not do.
STATE_WORDS = {
    "password": "waiting for your password",
    "refused": "certificate refused (see above)",
}


def lag_text(seconds: float) -> str:
    return f"{seconds * 1000:.0f}ms" if seconds < 1 else f"{seconds:.1f}s"


def you(session: ChatSession) -> str:
    name = session.me or session.name or "(no name)"
    account = session.me is not None and name.lower() in session.accounts
    return marked(name, account, session.operator and session.me is not None)


def status_parts(session: ChatSession, server: bool = True) -> list[str]:
    """The bar's words but the topic (``server=False``: without the server, when narrow)."""
    s = session
    state = STATE_WORDS.get(s.state, s.state)
    if s.state == "disconnected":
        state = f"disconnected ({s.last_error})" if s.last_error else state
        if s.retry is not None:
            state += f", retrying in {s.retry_in():.0f}s"
    elif s.state == "online" and (lag := s.history.lag_now()) is not None:
        state = f"online, lag {lag_text(lag)}"
    parts = [s.server_label] if server else []
    parts += [state, you(s)]
    if s.rooms.shown.name and (server or len(s.rooms) > 1):
        parts.append(s.rooms.shown.name)  # (narrow, in one room, it gives way to the count)
    if s.pane.unread_highlights:
        parts.append(plural(s.pane.unread_highlights, "highlight"))
    if waiting := s.outbox.waiting():
        parts.append(f"{plural(waiting, 'line')} to send")
    transfer = s.transfers.status()
    if transfer:
        parts.append(transfer)
    return parts


def topic(session: ChatSession) -> str:
    return session.rooms.shown.topic


def status_text(session: ChatSession, server: bool = True) -> str:
    return " | ".join(status_parts(session, server) + ([topic(session)] if topic(session)
                                                       else []))


def clock_text() -> str:
    return datetime.now().strftime("%H:%M")


def title(session: ChatSession) -> str:
    return Attention.title(session.me, session.server_label, session.rooms.unseen_highlights())
