"""Two members chat in two browsers on two workers: live messages and unread badges, typing, "Seen", presence;
a third member, signed in meanwhile, sees nothing of their conversation."""

import uuid

import httpx
import pytest
from playwright.sync_api import expect

from tests.browser.conftest import FAST_PRESENCE, sign_in
from tests.system.harness import base_env, run_django

pytestmark = [pytest.mark.browser, pytest.mark.system, pytest.mark.timeout(120)]

MESSAGING_ENV = {"MESSAGING_RATE_LIMITS": "message=0,typing=0,conversation=0", **FAST_PRESENCE}
CAROL = """
import json
from django.contrib.auth.models import User
carol, _ = User.objects.get_or_create(username="carol")
carol.set_password("pw-carol")
carol.save()
print(json.dumps({"id": carol.pk}))
"""


def new_group(base_url: str, token: str, members: list[int], title: str) -> int:
    response = httpx.post(
        f"{base_url}/api/conversations",
        json={"participants": members, "title": title},
        headers={"Authorization": f"Token {token}"},
        timeout=10,
    )
    assert response.status_code == 201, response.text
    return response.json()["id"]


def open_page(page, url: str) -> None:
    page.goto(url)
    expect(page.get_by_role("status", name="Connection")).to_have_text("live", timeout=10_000)


def test_two_members_chat_across_two_workers_and_a_third_sees_nothing(
    browser, site, redis_server, start_worker, tokens
):
    member_ids = {name: member["id"] for name, member in site["members"].items()}
    one = start_worker(redis_server.url, name="chat-one", **MESSAGING_ENV)
    two = start_worker(redis_server.url, name="chat-two", **MESSAGING_ENV)
    run_django(base_env(site["tmp"]), CAROL)
    tag = uuid.uuid4().hex[:6]
    chat = new_group(one.url, tokens["alice"], [member_ids["bob"]], f"Chat {tag}")
    # bob starts elsewhere, so alice's messages show up as unread in his list.
    elsewhere = new_group(one.url, tokens["bob"], [member_ids["alice"]], f"Elsewhere {tag}")
    contexts = [browser.new_context() for _ in range(3)]
    try:
        alice = sign_in(contexts[0], one.url, "alice")
        bob = sign_in(contexts[1], two.url, "bob")
        carol = sign_in(contexts[2], one.url, "carol")
        open_page(alice, f"{one.url}/messages/{chat}/")
        open_page(bob, f"{two.url}/messages/{elsewhere}/")
        open_page(carol, f"{one.url}/messages/")
        expect(alice.get_by_role("list", name="Participants").get_by_label("bob, online")).to_be_visible(timeout=10_000)

        # A message from alice (worker one) is an unread badge in bob's list (worker two), live.
        alice.get_by_role("textbox", name="Message").fill("hello bob")
        alice.get_by_role("button", name="Send").click()
        expect(alice.get_by_role("list", name="Messages")).to_contain_text("hello bob", timeout=10_000)
        chat_item = bob.get_by_role("list", name="Conversations").locator(f'li[data-conversation="{chat}"]')
        expect(chat_item.get_by_label("1 unread")).to_be_visible(timeout=10_000)
        expect(alice.locator("#seen")).to_have_count(0)

        # bob opens it: he reads it, his badge goes, and alice sees "Seen" under her message.
        chat_item.get_by_role("link").click()
        expect(bob.get_by_role("status", name="Connection")).to_have_text("live", timeout=10_000)
        expect(bob.get_by_role("list", name="Messages")).to_contain_text("hello bob", timeout=10_000)
        expect(bob.locator(f'#conversations li[data-conversation="{chat}"] .unread')).to_be_hidden(timeout=10_000)
        expect(alice.locator("#seen")).to_have_text("Seen by bob", timeout=10_000)

        # bob types: alice sees it; bob clears the box: it goes at once.
        typing_line = alice.get_by_role("status", name="Typing")
        bob.get_by_role("textbox", name="Message").press_sequentially("hi al", delay=30)
        expect(typing_line).to_have_text("bob is typing…", timeout=10_000)
        bob.get_by_role("textbox", name="Message").fill("")
        bob.get_by_role("textbox", name="Message").dispatch_event("input")
        expect(typing_line).to_have_text("", timeout=5_000)

        # bob types again and sends: the message arrives and the indicator goes with it.
        bob.get_by_role("textbox", name="Message").press_sequentially("hi alice", delay=30)
        expect(typing_line).to_have_text("bob is typing…", timeout=10_000)
        bob.get_by_role("button", name="Send").click()
        expect(alice.get_by_role("list", name="Messages")).to_contain_text("hi alice", timeout=10_000)
        expect(typing_line).to_have_text("")
        # alice has it open and visible: she reads it, and bob sees "Seen" under his message.
        expect(bob.locator("#seen")).to_have_text("Seen by alice", timeout=10_000)
        expect(bob.locator("#seen")).to_have_count(1)
        assert bob.locator("li.message.mine").last.evaluate("li => li.nextElementSibling.id") == "seen"

        # carol, signed in the whole time, saw nothing of it, cannot open it, read it or subscribe to it.
        expect(carol.locator(f'li[data-conversation="{chat}"]')).to_have_count(0)
        assert "hello bob" not in carol.content()
        assert "hi alice" not in carol.content()
        answers = carol.evaluate(
            """async (chat) => {
                const read = await fetch(`/api/conversations/${chat}/messages`);
                const stream = await fetch(`/realtime/connect?topics=conversation.${chat}.messages`);
                return [read.status, stream.status];
            }""",
            chat,
        )
        assert answers == [404, 403]
        page = carol.goto(f"{one.url}/messages/{chat}/")
        assert page is not None
        assert page.status == 404
    finally:
        for context in contexts:
            context.close()
