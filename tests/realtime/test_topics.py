import pytest

from realtime import topics
from realtime.topics import InvalidTopic, check_topic


@pytest.mark.parametrize("name", ["video.42.likes", "presence.member.7", "a", "x-y_z.0", "a" * 100, "member.3.inbox"])
def test_valid_topics_pass(name):
    assert check_topic(name) == name


@pytest.mark.parametrize(
    ("name", "reason"),
    [
        ("", "empty"),
        ("a" * 101, "longer than 100"),
        ("Video.1", "lower-case"),
        ("video..1", "lower-case"),
        (".video", "lower-case"),
        ("video.", "lower-case"),
        ("video 1", "lower-case"),
        ("video:1", "lower-case"),
        ("vidéo.1", "lower-case"),
        ("video.1\n", "lower-case"),
        (7, "string"),
        (None, "string"),
    ],
)
def test_invalid_topics_say_why(name, reason):
    with pytest.raises(InvalidTopic, match=reason):
        check_topic(name)


def test_builders_make_valid_topics():
    built = [
        topics.video_likes(4),
        topics.video_comments(4),
        topics.presence_member(9),
        topics.member_private(2, "x"),
    ]
    assert built == ["video.4.likes", "video.4.comments", "presence.member.9", "member.2.x"]
    assert all(check_topic(name) for name in built)
