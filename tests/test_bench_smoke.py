"""The benchmark's smoke run: a few seconds, so bench/ cannot rot.

It starts the real server and the separate load generator exactly as
``python -m bench`` does, with tiny loads, and asserts correctness only:
every line reached every recipient once and in order. Never speed.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from bench.run import render_table, run


@pytest.mark.timeout(120)
def test_bench_smoke_delivers_everything_once_and_in_order(tmp_path: Path) -> None:
    res = run(["--smoke", "--tmp", str(tmp_path)])
    fan = res["fanout"]["20"]["lanchat"]
    assert not fan["timed_out"]
    assert fan["deliveries"] == 2 * (20 * 3 * 20 - 3 * 20)  # rounds x (N x S x M - own lines)
    assert (fan["lost"], fan["duplicated"], fan["reordered"]) == (0, 0, 0)
    assert fan["latency_samples"] == fan["deliveries"]
    light = res["light"]["lanchat"]
    assert light["sent"] > 0
    assert (light["lost"], light["duplicated"], light["reordered"]) == (0, 0, 0)
    assert light["latency_samples"] == light["sent"] * 9  # each line reaches the 9 others
    (pair,) = res["upload"]["runs"]
    assert pair["lanchat"]["upload_bytes"] == pair["sink"]["upload_bytes"] == 4 * 1024**2
    assert pair["lanchat"]["lost"] == 0  # chat during the upload
    assert res["summary"]["upload"]["ratios"] == [res["summary"]["upload"]["ratio"]]
    table = render_table(res, res["summary"])
    assert "nothing lost" in table and "upload >= 80% of plain sink (median of 1 pairs)" in table
    assert not list(tmp_path.iterdir())  # the runner cleans up after itself
