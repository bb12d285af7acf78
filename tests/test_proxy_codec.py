"""The codec with bytes alone: framing across any chunking, streaming of large messages, limits."""

from __future__ import annotations

import itertools

import pytest
from hypothesis import given
from hypothesis import strategies as st

from scalple.proxy import codec
from scalple.proxy.codec import Framer, ProtocolViolation

# What PostgreSQL 15 answers to "SELECT 1 AS x" as a simple query.
ROW_DESCRIPTION = codec.message(
    b"T",
    b"\x00\x01x\x00"
    + b"\x00\x00\x00\x00"
    + b"\x00\x00"
    + b"\x00\x00\x00\x17"
    + b"\x00\x04"
    + b"\xff\xff\xff\xff"
    + b"\x00\x00",
)
DATA_ROW = codec.message(b"D", b"\x00\x01\x00\x00\x00\x011")
COMMAND_COMPLETE = codec.message(b"C", b"SELECT 1\x00")
READY = codec.encode_ready("I")
STREAM = ROW_DESCRIPTION + DATA_ROW + COMMAND_COMPLETE + READY

messages = st.lists(
    st.tuples(st.sampled_from(b"TDCZNEdc"), st.binary(max_size=300)), min_size=1, max_size=20
)


def _feed_all(framer: Framer, chunks: list[bytes]) -> list[codec.Frame]:
    return [f for chunk in chunks for f in framer.feed(chunk)]


def _chunks(data: bytes, cuts: list[int]) -> list[bytes]:
    points = sorted({c % (len(data) + 1) for c in cuts} | {0, len(data)})
    return [data[a:b] for a, b in itertools.pairwise(points)]


@given(messages, st.lists(st.integers(min_value=0), max_size=10))
def test_any_chunking_yields_the_same_messages(
    msgs: list[tuple[int, bytes]], cuts: list[int]
) -> None:
    data = b"".join(codec.message(bytes([t]), body) for t, body in msgs)
    frames = _feed_all(Framer(inspect_limit=100), _chunks(data, cuts))
    assert b"".join(f.raw for f in frames) == data
    whole = [(f.type, f.body) for f in frames if f.body is not None]
    small = [(t, body) for t, body in msgs if len(body) + 4 <= 100]
    assert [m for m in whole if m in small] == whole
    assert len(whole) >= len(small)


def test_row_description_and_tag_decode() -> None:
    frames = Framer().feed(STREAM)
    assert [chr(f.type) for f in frames] == ["T", "D", "C", "Z"]
    (field,) = codec.decode_row_description(frames[0].body or b"")
    assert (field.name, field.type_oid) == ("x", 23)
    assert codec.decode_command_tag(frames[2].body or b"") == "SELECT 1"
    assert codec.tag_rows("SELECT 1") == 1 and codec.tag_rows("INSERT 0 7") == 7
    assert codec.tag_rows("CREATE TABLE") is None


def test_large_message_streams_in_pieces_without_being_held() -> None:
    framer = Framer(inspect_limit=1024)
    big = codec.message(b"D", b"\x00\x01" + b"\x00\x10\x00\x00" + b"y" * (1 << 20))
    pieces = []
    for i in range(0, len(big), 4096):
        pieces += framer.feed(big[i : i + 4096])
        assert framer.pending <= len(big) and framer._tail < 1024
    assert b"".join(p.raw for p in pieces) == big
    assert all(p.body is None for p in pieces) and pieces[-1].final
    assert not any(p.final for p in pieces[:-1])


def test_a_large_statement_is_kept_in_pieces_until_whole_then_not_copied() -> None:
    # Joining each new piece onto the held ones copied the message once per piece: a 250 MB
    # statement stalled every client for 37 s. The pieces are kept, and joined once.
    framer = Framer(whole_types=b"Q", inspect_limit=1024)
    sql = b"SELECT '" + b"x" * 200_000 + b"'"
    big = codec.message(b"Q", sql + b"\x00")
    chunks = [big[i : i + 1000] for i in range(0, len(big), 1000)]
    for n, chunk in enumerate(chunks[:-1], 1):
        assert framer.feed(chunk) == []
        assert len(framer._parts) == n and framer.pending == sum(map(len, chunks[:n]))
    (frame,) = framer.feed(chunks[-1])
    assert frame.raw == big and isinstance(frame.body, memoryview)
    assert codec.decode_query(frame.body) == sql.decode()


def test_audited_messages_are_held_whole_and_capped() -> None:
    framer = Framer(whole_types=b"Q", max_size=1000, inspect_limit=10)
    q = codec.encode_query("SELECT " + "1" * 500)
    assert framer.feed(q[:100]) == []
    (frame,) = framer.feed(q[100:])
    assert codec.decode_query(frame.body or b"") == "SELECT " + "1" * 500
    with pytest.raises(ProtocolViolation, match="exceeds the limit"):
        Framer(whole_types=b"Q", max_size=1000).feed(codec.encode_query("x" * 2000)[:50])


def test_invalid_length_is_a_violation() -> None:
    with pytest.raises(ProtocolViolation, match="invalid message length"):
        Framer().feed(b"Q\x00\x00\x00\x02")


def test_bind_roundtrip_and_truncation() -> None:
    body = (
        b"portal\x00stmt\x00"
        + b"\x00\x01\x00\x01"
        + b"\x00\x02"
        + b"\x00\x00\x00\x03abc"
        + b"\xff\xff\xff\xff"
        + b"\x00\x00"
    )
    bind = codec.decode_bind(body)
    assert bind == codec.Bind("portal", "stmt", (1,), (b"abc", None), 12)
    with pytest.raises(ProtocolViolation):
        codec.decode_bind(body[:20])
    renamed = codec.encode_bind_renamed(body, bind, "scalple_1")
    again = codec.decode_bind(renamed[5:])
    assert (again.statement, again.params, again.param_formats) == ("scalple_1", bind.params, (1,))


def test_startup_params_and_cancel() -> None:
    packet = codec.encode_startup({"user": "u", "database": "d", "options": "-c a=b"})
    got = codec.read_startup(packet + b"extra")
    assert got is not None and got[0] == len(packet)
    assert codec.decode_startup_params(got[1]) == {
        "user": "u",
        "database": "d",
        "options": "-c a=b",
    }
    assert codec.decode_cancel(codec.encode_cancel(1234, -5)) == (1234, -5)
    with pytest.raises(ProtocolViolation):
        codec.read_startup(b"\x00\x00\x00\x03abcd")


def test_error_response_encodes_what_clients_read() -> None:
    (frame,) = Framer().feed(codec.encode_error("28000", "no identity", hint="say who"))
    fields = codec.decode_error_fields(frame.body or b"")
    assert fields == {"S": "ERROR", "V": "ERROR", "C": "28000", "M": "no identity", "H": "say who"}


@pytest.mark.parametrize("at", [0, (1 << 20) - 1, 1 << 20, 3 * (1 << 20) + 5, None])
def test_a_string_field_of_a_large_message_ends_at_its_nul(at: int | None) -> None:
    """A large message's body is a memoryview, searched for NUL a window at a time."""
    size = 3 * (1 << 20) + 10
    raw = bytearray(b"x" * size)
    if at is not None:
        raw[at] = 0
    body = memoryview(bytes(raw))
    if at is None:
        with pytest.raises(codec.ProtocolViolation):
            codec.cstring(body, 0)
    else:
        text, after = codec.cstring(body, 0)
        assert len(text) == at and after == at + 1
