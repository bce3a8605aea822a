"""The soak run in miniature, so it cannot rot: correctness only, never speed."""

from __future__ import annotations

from bench.soak import main


def test_soak_smoke() -> None:
    r = main(["--clients", "20", "--seconds", "4", "--interval", "0.5",
              "--upload-size", "1000000", "--slowloris", "5", "--header-timeout", "1",
              "--rate-window", "1"])
    assert r["messages_sent"] > 0
    assert r["deliveries"] == r["messages_sent"] * 20  # everyone got every line
    assert (r["lost"], r["duplicated"], r["reordered"]) == (0, 0, 0)
    assert r["flooder_cut"] >= 1 and r["server_saw_excess_flood"]
    assert r["uploads_ok"] >= 1 and r["uploads_failed"] == 0
    assert r["slowloris_cut"] >= 5  # each cut at the header deadline
    assert r["trickler_cut"] >= 1  # cut as too slow
