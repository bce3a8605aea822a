"""The Redis reply parser the cluster's connections use (``chat.redislink``):
every complete reply of a read at once, whatever way TCP cut the bytes."""

from __future__ import annotations

import random
from typing import Any

import txredisapi

from chat.redislink import Link, RedisAddress, _AllReplies, parse_url

STREAM = (
    b"+OK\r\n"
    b":42\r\n"
    b"$5\r\nhello\r\n"
    b"$-1\r\n"
    b"-NOSCRIPT No matching script\r\n"
    b"*3\r\n$7\r\nmessage\r\n$14\r\nlanchat:events\r\n$22\r\nn1 7 {\"id\":1,\"x\":\"\xc3\xa9\"}\r\n"
    b"*2\r\n*1\r\n:1\r\n$0\r\n\r\n"
)


class Recorder(_AllReplies):
    def __init__(self) -> None:
        self.replies: list[Any] = []

    def replyReceived(self, reply: Any) -> None:
        self.replies.append(reply)


def plain(replies: list[Any]) -> list[Any]:
    return [("error", str(r)) if isinstance(r, txredisapi.ResponseError) else r
            for r in replies]


EXPECTED = [
    "OK", 42, "hello", None, ("error", "NOSCRIPT No matching script"),
    ["message", "lanchat:events", 'n1 7 {"id":1,"x":"é"}'],
    [[1], ""],
]


def test_every_reply_of_one_read_is_handed_over_at_once() -> None:
    r = Recorder()
    r.dataReceived(STREAM)
    assert plain(r.replies) == EXPECTED


def test_replies_cut_at_every_byte_come_out_the_same() -> None:
    for cut in range(1, len(STREAM)):
        r = Recorder()
        r.dataReceived(STREAM[:cut])
        r.dataReceived(STREAM[cut:])
        assert plain(r.replies) == EXPECTED, cut


def test_replies_cut_at_random_points_come_out_the_same() -> None:
    rng = random.Random(18)
    data = STREAM * 20
    for _ in range(200):
        r = Recorder()
        pos = 0
        while pos < len(data):
            step = rng.randint(1, 40)
            r.dataReceived(data[pos:pos + step])
            pos += step
        assert plain(r.replies) == EXPECTED * 20


def test_redis_urls() -> None:
    assert parse_url("redis://127.0.0.1:6380/2") == RedisAddress("127.0.0.1", 6380, 2, None)
    assert parse_url("redis://:s%40cret@redis.lan") == RedisAddress("redis.lan", 6379, 0, "s@cret")
    assert parse_url("unix:///run/redis.sock?db=3").socket == "/run/redis.sock"
    for bad in ("http://x", "redis://", "redis://h/db", "redis://h:port"):
        try:
            parse_url(bad)
        except ValueError:
            continue
        raise AssertionError(f"{bad!r} was accepted")
    assert Link  # the module's public class, used by chat.cluster
