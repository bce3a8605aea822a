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
    shm = tmp_path / "shm"  # stands in for /dev/shm, so that its emptying can be checked
    shm.mkdir()
    res = run(["--smoke", "--tmp", str(tmp_path), "--tmpfs", str(shm)])
    fan = res["fanout"]["20"]["lanchat"]
    assert not fan["timed_out"]
    assert fan["deliveries"] == 2 * (20 * 3 * 20 - 3 * 20)  # rounds x (N x S x M - own lines)
    assert (fan["lost"], fan["duplicated"], fan["reordered"]) == (0, 0, 0)
    assert fan["latency_samples"] == fan["deliveries"]
    light = res["light"]["lanchat"]
    assert light["sent"] > 0
    assert (light["lost"], light["duplicated"], light["reordered"]) == (0, 0, 0)
    assert light["latency_samples"] == light["sent"] * 9  # each line reaches the 9 others
    up = res["upload"]
    assert set(up["filesystems"]) == {"tmpfs", "disk"}
    for name, fs in up["filesystems"].items():
        (rnd,) = fs["runs"]  # one round: lanchat and the reference, with chat beside and alone
        sides = ("lanchat", "lanchat_alone", "reference", "reference_chat")
        sizes = {rnd[side]["upload_bytes"] for side in sides}
        assert sizes == {fs["size"]} == {4 * 1024**2}
        assert rnd["lanchat"]["lost"] == rnd["reference_chat"]["lost"] == 0  # chat meanwhile
        assert rnd["reference"]["server_cpu_s"] >= 0
        got = res["summary"]["upload"][name]
        assert got["cpu_ratios"] == [got["cpu_ratio"]] and got["floor_cpu_s_per_gib"] > 0
        assert got["mb_s_ratios"] == [got["mb_s_ratio"]]
    (h,) = up["hash"]
    assert h["sha256_s_per_gib"] > 0 and h["crc32_s_per_gib"] > 0
    table = render_table(res, res["summary"])
    assert "nothing lost" in table and "reference + SHA-256 + CRC-32" in table
    assert "upload throughput (chatting) >= 0.8x reference on the data dir's disk" in table
    assert [p.name for p in tmp_path.iterdir()] == ["shm"]  # the runner cleans up after itself
    assert not list(shm.iterdir())
