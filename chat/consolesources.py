"""Where the console's numbers and chat log come from.

``Sources`` holds the pieces of a running ``ChatServer`` the console reads
(the chat service, the file store, the listening ports, the header's notes)
and words the header's store line and addresses; ``entry_for`` turns one
remembered chat event (or a run of private messages, kept only as a
``PrivateRun`` count) into the chat log's ``Entry``, user text scrubbed again.
"""

from __future__ import annotations

import shutil
from dataclasses import dataclass, field
from typing import Any

from chat import events as ev
from chat.consoleview import Entry
from chat.sanitize import for_log
from chat.units import human_duration, human_size, plural


@dataclass
class Sources:
    """What the console reads: the pieces of a running ``ChatServer``."""

    service: Any  # chat.service.ChatService
    files: Any  # chat.transfer.FileStore
    ports: dict[str, Any]
    started: float
    admin: Any = None  # chat.admin.Admin
    #: What the header keeps saying: (kind, text), e.g. the TLS fingerprint.
    notes: list[tuple[str, str]] = field(default_factory=list)
    file_service: Any = None  # chat.files.FileService

    @classmethod
    def of(cls, server: Any) -> Sources:
        assert server.service is not None and server.factory is not None
        return cls(server.service, server.factory.files.store, server.ports, server.started,
                   server.factory.admin, server.notes, server.factory.files)

    def store_line(self, now: float) -> str:
        """Files kept, their bytes, free disk, and what the last sweep did."""
        fs = self.file_service
        if fs is None:
            return ""
        try:
            free = human_size(shutil.disk_usage(fs.store.root).free)
        except OSError:
            free = "?"
        line = f"store {plural(fs.count, 'file')} {human_size(fs.bytes)}, {free} free"
        swept = fs.last_sweep
        if swept is not None:
            line += (f"; swept {human_duration(now - swept.at)} ago: {swept.expired} expired, "
                     f"{swept.partials} partial")
        return line

    def addresses(self) -> tuple[tuple[str, str], ...]:
        out = []
        for name in ("chat", "http"):
            port = self.ports.get(name)
            if port is not None:
                host = port.getHost()
                h = getattr(host, "host", str(host))
                out.append((name, f"[{h}]:{host.port}" if ":" in h else f"{h}:{host.port}"))
        return tuple(out)


class PrivateRun:
    """Consecutive private messages, kept as a count: the operator never reads them."""

    __slots__ = ("count", "ts")

    def __init__(self, ts: float) -> None:
        self.count = 1
        self.ts = ts


def entry_for(item: ev.Event | PrivateRun | Entry) -> Entry:
    """The chat-log line for one remembered item; user text scrubbed again for safety."""
    if isinstance(item, Entry):
        return item
    if isinstance(item, PrivateRun):
        s = "" if item.count == 1 else "s"
        return Entry("private", f"({item.count} private message{s})", item.ts)
    e = item
    room = getattr(e, "room", None)
    where = f"[{for_log(room)}] " if room else ""
    if isinstance(e, ev.Message):
        return Entry("message", f"{where}<{for_log(e.sender)}> {for_log(e.text)}", e.ts)
    if isinstance(e, ev.Action):
        return Entry("action", f"{where}* {for_log(e.sender)} {for_log(e.text)}", e.ts)
    if isinstance(e, ev.Join):
        return Entry("join", f"{where}→ {for_log(e.name)} joined", e.ts)
    if isinstance(e, ev.Part):
        why = f" ({for_log(e.reason)})" if e.reason else ""
        return Entry("part", f"{where}← {for_log(e.name)} left the room{why}", e.ts)
    if isinstance(e, ev.Topic):
        return Entry("topic", f"{where}{for_log(e.by)} set the topic: {for_log(e.topic)}", e.ts)
    if isinstance(e, ev.Leave):
        return Entry("leave", f"← {for_log(e.name)} left ({for_log(e.reason)})", e.ts)
    if isinstance(e, ev.Nick):
        return Entry("nick", f"{for_log(e.old)} is now {for_log(e.new)}", e.ts)
    if isinstance(e, ev.Notice):
        return Entry("notice", f"{where}notice: {for_log(e.text)}", e.ts)
    if isinstance(e, ev.FileShared):
        return Entry(
            "file",
            f"{where}{for_log(e.sender)} shared {for_log(e.name)} ({human_size(e.size)}) "
            f"{e.file_id}",
            e.ts,
        )
    if isinstance(e, ev.Removed):
        return Entry("file", f"{where}{for_log(e.by)} removed {for_log(e.name)} {e.file_id}", e.ts)
    return Entry("console", for_log(type(e).__name__), None)
