import pytest

from realtime.peers import (
    HEADER_SIGNATURE,
    InvalidPeerRequest,
    MemorySeen,
    parse_peers,
    parse_wire,
    signed_headers,
    verify,
)


def test_parse_peers():
    assert parse_peers("dc2=http://a:1, dc3=https://b/", self_name="dc1") == {"dc2": "http://a:1", "dc3": "https://b"}
    assert parse_peers("", self_name="dc1") == {}


@pytest.mark.parametrize(
    ("value", "reason"),
    [("dc2", "name="), ("dc2=ftp://x", "name="), ("dc1=http://x", "its own peer"), ("a=http://x,a=http://y", "twice")],
)
def test_bad_peer_lists_say_why(value, reason):
    with pytest.raises(ValueError, match=reason):
        parse_peers(value, self_name="dc1")


def test_a_signed_request_verifies_and_any_change_breaks_it():
    body = b'{"events": []}'
    headers = signed_headers("s3cret", "dc2", body, now=1000.0)
    assert verify(headers, body, secret="s3cret", known={"dc2"}, now=1010.0) == "dc2"
    with pytest.raises(InvalidPeerRequest, match="signature"):
        verify(headers, body + b" ", secret="s3cret", known={"dc2"}, now=1010.0)
    with pytest.raises(InvalidPeerRequest, match="signature"):
        verify(headers, body, secret="other", known={"dc2"}, now=1010.0)
    with pytest.raises(InvalidPeerRequest, match="stale"):
        verify(headers, body, secret="s3cret", known={"dc2"}, now=1000.0 + 61)
    with pytest.raises(InvalidPeerRequest, match="unknown"):
        verify(headers, body, secret="s3cret", known={"dc3"}, now=1000.0)
    with pytest.raises(InvalidPeerRequest, match="no REALTIME_PEER_SECRET"):
        verify(headers, body, secret="", known={"dc2"}, now=1000.0)
    with pytest.raises(InvalidPeerRequest, match="signature"):
        verify({**headers, HEADER_SIGNATURE: "0" * 64}, body, secret="s3cret", known={"dc2"}, now=1000.0)


async def test_memory_seen_delivers_each_id_once_within_its_ttl():
    seen = MemorySeen()
    assert await seen.afirst_time(["a", "b", "a"], now=0.0) == [True, True, False]
    assert await seen.afirst_time(["a", "c"], now=1.0) == [False, True]
    assert await seen.afirst_time(["a"], now=10_000.0) == [True]


@pytest.mark.parametrize(
    "body",
    [b"nope", b"[]", b'{"events": []}', b'{"events": [{"id": 1}]}', b'{"events": [{"id": "x", "topic": "Bad"}]}'],
)
def test_malformed_peer_batches_are_refused(body):
    with pytest.raises(ValueError):  # noqa: PT011 (each case has its own message)
        parse_wire(body)
