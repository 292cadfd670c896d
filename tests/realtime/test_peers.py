import json

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


GOOD = {"id": "1700000000000000-dc2.ab12", "topic": "a.b", "type": "t", "data": {"n": 1}, "published_at": 1.5}


def _batch(**changes):
    return json.dumps({"events": [{**GOOD, **changes}]}).encode()


@pytest.mark.parametrize(
    "body",
    [
        b"nope",
        b"[]",
        b'{"events": []}',
        b'{"events": [{"id": 1}]}',
        _batch(topic="Bad"),
        _batch(id="x"),
        _batch(id="1-dc2\r\nevent: reset"),
        _batch(published_at=True),
        _batch(data="x" * 2000),  # past the per-event limit below
        _batch(topic="a" * 101),
        _batch(type="reset"),
        b'{"events": [{"id": "1-dc2", "topic": "a.b", "type": "t", "data": NaN, "published_at": 1}]}',
        b'{"events": [{"id": "1-dc2", "topic": "a.b", "type": "t", "data": "\\ud800", "published_at": 1}]}',
        b'{"events": [{"id": "1-dc2", "topic": "a.b", "type": "t", "data": 1, "published_at": NaN}]}',
        b"\xff",
    ],
)
def test_malformed_peer_batches_are_refused_like_local_publishes(body):
    with pytest.raises(ValueError):  # noqa: PT011 (each case has its own message)
        parse_wire(body, max_event_bytes=1024)


def test_a_valid_batch_carries_the_frames_encoded_once():
    [event] = parse_wire(_batch(topic="a" * 100), max_event_bytes=1024)
    # Without its position: this data centre's history gives it one.
    assert event.template.head == b"event: t\n"
    assert event.template.body.startswith(b'data: {"id":"1700000000000000-dc2.ab12"')


async def test_a_forgotten_id_is_delivered_again():
    seen = MemorySeen()
    assert await seen.afirst_time(["a"], now=0.0) == [True]
    await seen.aforget(["a"])
    assert await seen.afirst_time(["a"], now=0.0) == [True]


async def test_a_batch_that_could_not_be_delivered_is_delivered_on_the_retry(monkeypatch):
    from realtime import publishing
    from realtime.dispatcher import DispatchUnavailable

    [event] = parse_wire(_batch(id="1700000000000001-dc2.ab12"), max_event_bytes=1024)
    dispatcher = publishing.get_dispatcher()
    real = dispatcher.asend_events

    async def down(events):
        raise DispatchUnavailable("redis is down")

    monkeypatch.setattr(dispatcher, "asend_events", down)
    with pytest.raises(DispatchUnavailable):
        await publishing.adeliver_from_peer([event], now=0.0)
    monkeypatch.setattr(dispatcher, "asend_events", real)
    assert await publishing.adeliver_from_peer([event], now=0.0) == 1
    assert await publishing.adeliver_from_peer([event], now=0.0) == 0
