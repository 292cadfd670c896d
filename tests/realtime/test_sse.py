import json

import pytest

from realtime import sse
from realtime.events import IdClock, InvalidEvent, check_type, encode_template, frame_at


def parse(stream: bytes) -> list[dict]:
    """A minimal EventSource parser (CR, LF and CRLF all end a line), to read back what we framed."""
    text = stream.decode().replace("\r\n", "\n").replace("\r", "\n")
    frames, current = [], {}
    for line in text.split("\n"):
        if line == "":
            if current:
                frames.append(current)
            current = {}
            continue
        if line.startswith(":"):
            continue
        field, _, value = line.partition(":")
        value = value.removeprefix(" ")
        if field == "data":
            current["data"] = current["data"] + "\n" + value if "data" in current else value
        else:
            current[field] = value
    return frames


@pytest.mark.parametrize(
    "payload",
    [
        "plain",
        "line one\nline two",
        "carriage\rreturn",
        "crlf\r\nline",
        "data: injected\n\nevent: evil",
        "id: 666\r\n\r\nretry: 1",
        "unicode ü ❤ 日本 \u2028 \u0085",
        "",
    ],
)
@pytest.mark.parametrize("epoch", ["e1", ""])
def test_event_payloads_cannot_break_out_of_their_frame(payload, epoch):
    template = encode_template("1-n", "video.1.likes", "like.created", {"text": payload}, 1.5)
    frame = frame_at(template, "video.1.likes", epoch, 7)
    frames = parse(frame)
    assert len(frames) == 1
    assert frames[0]["event"] == "like.created"
    event = json.loads(frames[0]["data"])
    assert event["data"] == {"text": payload}
    assert event["id"] == "1-n"
    if epoch:
        # The SSE id is the position, which EventSource sends back as Last-Event-ID.
        assert frames[0]["id"] == "video.1.likes:e1:7"
        assert (event["epoch"], event["offset"]) == ("e1", 7)
    else:
        assert "id" not in frames[0]
        assert "offset" not in event
    assert frame.count(b"\n\n") == 1
    assert frame.endswith(b"\n\n")
    assert b"\r" not in frame


def test_multiline_data_becomes_several_data_lines():
    assert sse.frame("a\nb\r\nc\rd", event="x") == b"event: x\ndata: a\ndata: b\ndata: c\ndata: d\n\n"


@pytest.mark.parametrize("field", ["id", "event"])
def test_line_breaks_in_id_or_event_are_refused(field):
    with pytest.raises(ValueError, match="CR or LF"):
        sse.frame("x", **{field: "a\nb"})


def test_comment_and_retry():
    assert sse.comment() == b":\n\n"
    assert sse.comment("ping") == b": ping\n\n"
    assert sse.retry(2000) == b"retry: 2000\n\n"


def test_unserialisable_data_is_an_invalid_event():
    with pytest.raises(InvalidEvent, match="JSON"):
        encode_template("1-n", "t", "x", {"when": object()}, 0)
    with pytest.raises(InvalidEvent, match="JSON"):
        encode_template("1-n", "t", "x", float("nan"), 0)


@pytest.mark.parametrize("name", ["Like", "like created", "like.", "", "a" * 65, None, "like\n"])
def test_event_types_are_dotted_lower_case(name):
    with pytest.raises(InvalidEvent):
        check_type(name)


def test_ids_increase_even_when_the_clock_stands_still_or_goes_back():
    clock = IdClock("dc1.n")
    ids = [clock.next_id(now) for now in (10.0, 10.0, 9.0, 10.000001, 11.0)]
    numbers = [int(event_id.split("-")[0]) for event_id in ids]
    assert numbers == sorted(numbers)
    assert len(set(numbers)) == 5
    assert all(event_id.endswith("-dc1.n") for event_id in ids)
