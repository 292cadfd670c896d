"""Per-namespace read and publish rules: declared by the owning apps, opened by the operator, else refused."""

import re
from typing import Any

import pytest
from asgiref.sync import async_to_sync

from realtime import policies
from realtime.topics import ForbiddenTopic

OPEN = ("news",)


@pytest.mark.parametrize(
    ("topic", "member", "allowed"),
    [
        ("video.1.likes", None, True),  # likes: public
        ("video.1.comments", 3, True),
        ("presence.member.7", None, False),  # presence: signed-in members (PRESENCE PUBLIC opens it)
        ("presence.member.7", 3, True),
        ("census.video.1.likes", None, True),  # the core's viewer counts
        ("census.members.video.1.likes", None, False),  # who is watching: signed-in members only
        ("census.members.video.1.likes", 3, True),
        ("member.7.inbox", 7, True),  # the core: a member's own
        ("member.7.inbox", 8, False),
        ("member.7.inbox", None, False),
        ("member.77.inbox", 7, False),
        ("member.7.a.b", 7, True),
        ("member.7", 7, False),  # not under member.{id}.*: nobody declared it
        ("news.flash", None, True),  # opened by the operator
        ("news.world.europe", 4, True),
        ("video.x.likes", None, False),  # the pattern's {id} is a number
        ("chat.room", 1, False),  # nobody declared chat.*
    ],
)
def test_who_may_read(topic: str, member: int | None, allowed: bool) -> None:
    if allowed:
        async_to_sync(policies.acheck_read)([topic], member, OPEN)
    else:
        with pytest.raises(ForbiddenTopic):
            async_to_sync(policies.acheck_read)([topic], member, OPEN)


def test_a_refusal_names_the_rule_that_refused() -> None:
    with pytest.raises(ForbiddenTopic, match=re.escape("no app declares the namespace of 'chat.room'")):
        async_to_sync(policies.acheck_read)(["chat.room"], 1, OPEN)
    with pytest.raises(ForbiddenTopic, match=r"realtime: MEMBER"):
        async_to_sync(policies.acheck_read)(["member.7.inbox"], 8, OPEN)


@pytest.mark.parametrize(
    ("topic", "event_type", "refusal"),
    [
        ("news.flash", "news.posted", None),
        ("news.flash", "anything.at-all", None),
        ("video.1.likes", "like.created", "published by likes.services only"),
        ("video.1.comments", "comment.created", "published by likes.services only"),
        ("presence.member.7", "presence.changed", "published by presence.services only"),
        ("member.7.inbox", "message.created", "published by realtime only"),
        ("census.video.1.likes", "census.changed", "only"),
        ("chat.room", "message.created", "no app declares"),
    ],
)
def test_what_the_publish_api_may_send(topic: str, event_type: str, refusal: str | None) -> None:
    if refusal is None:
        policies.check_api_publish(topic, event_type, OPEN)
    else:
        with pytest.raises(policies.PublishRefused, match=refusal):
            policies.check_api_publish(topic, event_type, OPEN)


def test_a_namespace_may_open_some_types_to_the_api() -> None:
    policies.declare(policies.Namespace("alerts.{id}", owner="tests", api_types=frozenset({"alert.raised"})))
    try:
        policies.check_api_publish("alerts.3", "alert.raised")
        with pytest.raises(policies.PublishRefused, match=re.escape("may send only alert.raised")):
            policies.check_api_publish("alerts.3", "alert.cleared")
    finally:
        policies._declared[:] = [ns for ns in policies._declared if ns.owner != "tests"]


@pytest.mark.parametrize("pattern", ["a.*.b", "a.B", "a.{x"])
def test_malformed_patterns_are_refused_when_declared(pattern: str) -> None:
    with pytest.raises(ValueError, match="namespace pattern"):
        policies.Namespace(pattern, owner="tests")


def test_presence_opens_to_anyone_when_the_operator_makes_it_public(settings: Any) -> None:
    settings.PRESENCE = {**getattr(settings, "PRESENCE", {}), "PUBLIC": True}
    async_to_sync(policies.acheck_read)(["presence.member.7"], None, OPEN)


def test_an_apps_async_rule_decides_all_its_topics_of_a_check_in_one_call() -> None:
    calls: list[list[str]] = []

    async def participants(member_id: int | None, params: list) -> list[bool]:
        calls.append([p["id"] for p in params])
        return [member_id == 7 and p["id"] != "3" for p in params]

    space = policies.Namespace("room.{id}.*", owner="tests", read=policies.SIGNED_IN, aread=participants)
    policies.declare(space)
    try:
        async_to_sync(policies.acheck_read)(["room.1.a", "room.2.b", "news.x"], 7, OPEN)
        assert calls == [["1", "2"]]  # one call (one query) for both rooms
        with pytest.raises(ForbiddenTopic, match=r"room\.3\.a.*participants"):
            async_to_sync(policies.acheck_read)(["room.1.a", "room.3.a"], 7, OPEN)
        with pytest.raises(ForbiddenTopic, match="SIGNED_IN"):
            async_to_sync(policies.acheck_read)(["room.1.a"], None, OPEN)
        assert len(calls) == 2  # the static rule refused first: no query for an anonymous stream
    finally:
        policies._declared.remove(space)
