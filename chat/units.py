"""Sizes, durations and counts as people read them, for the server and the client alike.

Both sides import these, so a file is ``381.5 MiB`` and an idle time ``1m 15s``
wherever it is shown. ``plural`` keeps counts grammatical (``1 byte``,
``2 bytes``).
"""

from __future__ import annotations


def human_size(size: float) -> str:
    """``1536`` -> ``'1.5 KiB'``; whole bytes below 1 KiB (``'512 B'``)."""
    value = float(size)
    for unit in ("B", "KiB", "MiB", "GiB", "TiB"):
        if abs(value) < 1024 or unit == "TiB":
            return f"{int(size)} B" if unit == "B" else f"{value:.1f} {unit}"
        value /= 1024
    raise AssertionError("unreachable")


def human_duration(seconds: float) -> str:
    """``75`` -> ``'1m 15s'``, ``3725`` -> ``'1h 2m'``: two units at most."""
    s = int(max(0, seconds))
    if s < 60:
        return f"{s}s"
    m, s = divmod(s, 60)
    if m < 60:
        return f"{m}m {s}s"
    h, m = divmod(m, 60)
    if h < 24:
        return f"{h}h {m}m"
    d, h = divmod(h, 24)
    return f"{d}d {h}h"


def plural(count: int, noun: str, nouns: str | None = None) -> str:
    """``plural(1, 'byte')`` -> ``'1 byte'``; ``plural(2, 'byte')`` -> ``'2 bytes'``."""
    return f"{count} {noun if count == 1 else (nouns or noun + 's')}"
