"""The benchmark's smoke run: a few seconds, so bench/ cannot rot.

It starts the real server and the separate load generator exactly as
``python -m bench`` does, with tiny loads, and asserts correctness only:
every line reached every recipient once and in order. Never speed.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from bench import cluster
from bench.run import render_table, run
from tests.cluster_support import needs_redis


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


@needs_redis
@pytest.mark.timeout(120)
def test_cluster_bench_smoke_checks_every_member(tmp_path: Path) -> None:
    """``python -m bench --only cluster`` with tiny numbers: 1 node, then 2 nodes + Redis."""
    res = cluster.run([
        "--n", "10", "--rounds", "1", "--senders", "3", "--rate", "50", "--paced-seconds",
        "0.5", "--burst-messages", "5", "--burst-repeats", "2", "--light-messages", "10",
        "--light-interval-ms", "5", "--probes", "2", "--tmp", str(tmp_path),
    ])
    (rnd,) = res["rounds"]
    assert (rnd["single"]["nodes"], rnd["cluster"]["nodes"]) == (1, 2)
    # Lines per phase and who gets them: all 10 (JSON echoes), or the room's 5
    # (the sender c0, c1 and c3 on node B, c2 and c4 on node A).
    lines = {"paced": (25, 10), "burst": (3 * 5 * 2, 10), "light": (10, 10),
             "light_room": (10, 5)}
    for side in ("single", "cluster"):
        for phase, (count, members) in lines.items():
            got = rnd[side][phase]
            assert not got["timed_out"]
            assert got["deliveries"] == got["expected_deliveries"] == count * members
            assert (got["lost"], got["duplicated"], got["reordered"]) == (0, 0, 0)
            assert got["orders"] == 1  # every member saw the same sequence
        assert rnd[side]["light"]["far_samples"] == rnd[side]["light_room"]["far_samples"] == 20
    assert set(rnd["cluster"]["paced"]["cpu_s"]) == {"node A", "node B", "redis"}
    s = res["summary"]
    assert s["cluster"]["lost_dup_reordered"] == [0, 0, 0] and s["cluster"]["one_order"]
    assert cluster.from_bench_argv(["--only", "cluster", "--n", "10"]) == ["--n", "10"]
    assert cluster.from_bench_argv(["--only", "fanout"]) is None
    table = cluster.render(res)
    assert "cross-node p99 at light load <= 5 ms" in table
    assert "the same order at every member" in table
    assert not list(tmp_path.iterdir())  # the runner cleans up after itself (Redis included)
