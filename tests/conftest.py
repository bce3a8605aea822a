from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.support import MemoryServer, RealServer, memory_server, relaxed_config, running
from tests.test_console_tmux import Tmux
from tests.tui_support import TuiDriver


@pytest.fixture
def mem(tmp_path: Path) -> MemoryServer:
    return memory_server(tmp_path, relaxed_config())


@pytest.fixture
def real(tmp_path: Path) -> Iterator[RealServer]:
    with running(tmp_path / "data") as server:
        yield server


@pytest.fixture
def tmux(tmp_path: Path) -> Iterator[Tmux]:
    """A private tmux server for a test, killed after it."""
    t = Tmux(tmp_path)
    try:
        yield t
    finally:
        t.kill()


@pytest.fixture
def drivers() -> Iterator[list[TuiDriver]]:
    """chat-tui processes a test starts; closed after it."""
    started: list[TuiDriver] = []
    yield started
    for d in started:
        d.close()
