"""The one line framer of every line-based stream (ndsclust.framing)."""

from __future__ import annotations

import socket

import pytest

from ndsclust.framing import LineFramer, receive


def test_pieces_are_joined_into_lines() -> None:
    framer = LineFramer(16)
    assert framer.feed(b"ren") == []
    assert framer.feed(b"ew\nstop x\nst") == [b"renew", b"stop x"]
    assert framer.feed(b"op x 1\n\n") == [b"stop x 1", b""]
    assert framer.too_long == 0


def test_a_line_of_exactly_the_limit_is_kept() -> None:
    framer = LineFramer(4)
    assert framer.feed(b"abcd\nabcde\n") == [b"abcd"]
    assert framer.too_long == 1


def test_a_protocol_line_over_the_limit_is_dropped_and_the_stream_is_back_in_step() -> None:
    framer = LineFramer(16)
    assert framer.feed(b"ok\n" + b"x" * 17) == [b"ok"]
    assert framer.too_long == 1
    # The rest of the long line is skipped without being held, up to its newline.
    assert framer.feed(b"y" * 100_000) == [] and framer.too_long == 0
    assert framer.feed(b"yyy\nrenew\n") == [b"renew"]
    assert framer.too_long == 0
    assert framer.feed(b"z" * 40 + b"\nnext\n") == [b"next"]
    assert framer.too_long == 1


def test_output_over_the_limit_comes_in_pieces_without_loss() -> None:
    framer = LineFramer(4, split=True)
    assert framer.feed(b"ab\ncdefgh") == [b"ab", b"cdef"]
    assert framer.feed(b"\n\n") == [b"gh", b""]
    assert framer.feed(b"abcd\n") == [b"abcd"]
    assert framer.feed(b"tail") == [b"tail"]
    assert framer.feed(b"xy") == []
    assert framer.rest() == b"xy"
    assert framer.rest() == b""
    assert framer.too_long == 0


def test_the_rest_of_a_dropped_line_is_not_handed_out() -> None:
    framer = LineFramer(4)
    assert framer.feed(b"abcdefgh") == []
    assert framer.rest() == b""
    assert framer.feed(b"ab\n") == [b"ab"]


def test_a_limit_must_hold_a_byte() -> None:
    with pytest.raises(ValueError, match="at least 1 byte"):
        LineFramer(0)


def test_receive_tells_nothing_yet_from_the_end() -> None:
    a, b = socket.socketpair()
    try:
        a.setblocking(False)
        assert receive(a) is None
        b.sendall(b"hi")
        assert receive(a) == b"hi"
        b.close()
        assert receive(a) == b""
    finally:
        a.close()
