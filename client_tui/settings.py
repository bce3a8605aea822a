"""The client's settings file: ``$XDG_CONFIG_HOME/lanchat/tui.toml``.

A small TOML file of top-level keys — ``ignore`` (names whose lines this
client hides), ``bell``, ``paste`` and ``log`` (defaults for the options of
the same names) — read at start. ``/ignore`` and ``/unignore`` write it back
whole, atomically, keeping the other keys; a file that does not parse is
reported and left alone (nothing is written over it).
"""

from __future__ import annotations

import json
import os
import tempfile
import tomllib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from client_tui.paste import PASTE_MODES

HEADER = "# chat-tui settings (docs/tui.md). /ignore and /unignore rewrite this file.\n"


def config_dir() -> Path:
    """``$XDG_CONFIG_HOME/lanchat``, or ``~/.config/lanchat`` (the XDG default)."""
    base = os.environ.get("XDG_CONFIG_HOME") or ""
    root = Path(base) if os.path.isabs(base) else Path.home() / ".config"
    return root / "lanchat"


class SettingsError(ValueError):
    """The settings file exists but cannot be used; the message says why."""


@dataclass
class Settings:
    #: where they are kept; ``None``: in memory only (tests, or no home directory)
    path: Path | None
    ignore: list[str] = field(default_factory=list)
    bell: bool | None = None
    paste: str | None = None
    log: str | None = None
    #: the file could not be read: keep it as it is
    broken: bool = False

    @classmethod
    def load(cls, path: Path | None = None) -> Settings:
        """The settings in ``path`` (default ``config_dir()/tui.toml``); empty if none.

        Raises ``SettingsError`` for a file that is there but wrong.
        """
        path = path or config_dir() / "tui.toml"
        try:
            data = tomllib.loads(path.read_text(encoding="utf-8"))
        except FileNotFoundError:
            return cls(path)
        except (OSError, UnicodeDecodeError, tomllib.TOMLDecodeError) as e:
            raise SettingsError(f"{path}: {e}") from None
        return cls(path, **_checked(path, data))

    def is_ignored(self, name: str | None) -> bool:
        return name is not None and name.lower() in {n.lower() for n in self.ignore}

    def save(self) -> None:
        """Write the file (atomically: a temporary file renamed over it)."""
        if self.path is None:
            return
        if self.broken:
            raise SettingsError(f"{self.path} could not be read at start; not overwriting it")
        values: dict[str, Any] = {"ignore": sorted(self.ignore, key=str.lower)}
        values.update((k, v) for k, v in (("bell", self.bell), ("paste", self.paste),
                                           ("log", self.log)) if v is not None)
        # JSON strings, lists and booleans are valid TOML values.
        text = HEADER + "".join(f"{k} = {json.dumps(v, ensure_ascii=False)}\n"
                               for k, v in values.items())
        self.path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=".tui.", suffix=".toml", dir=self.path.parent)
        try:
            with os.fdopen(fd, "w", encoding="utf-8") as f:
                f.write(text)
            os.replace(tmp, self.path)
        except OSError:
            os.unlink(tmp)
            raise


def _checked(path: Path, data: dict[str, Any]) -> dict[str, Any]:
    """The known keys of ``data``, each of the right type."""
    kinds: dict[str, Any] = {"ignore": list, "bell": bool, "paste": str, "log": str}
    out: dict[str, Any] = {}
    for key, value in data.items():
        kind = kinds.get(key)
        if kind is None:
            raise SettingsError(f"{path}: unknown setting {key!r}")
        if not isinstance(value, kind) or (
            key == "ignore" and not all(isinstance(n, str) for n in value)
        ):
            raise SettingsError(f"{path}: {key} must be a {kind.__name__}")
        if key == "paste" and value not in PASTE_MODES:
            raise SettingsError(f"{path}: paste must be one of {', '.join(PASTE_MODES)}")
        out[key] = value
    return out
