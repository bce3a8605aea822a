from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.support import MemoryServer, RealServer, memory_server, relaxed_config, running


@pytest.fixture
def mem(tmp_path: Path) -> MemoryServer:
    return memory_server(tmp_path, relaxed_config())


@pytest.fixture
def real(tmp_path: Path) -> Iterator[RealServer]:
    with running(tmp_path / "data") as server:
        yield server
