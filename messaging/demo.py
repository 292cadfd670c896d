"""The demo's conversations (seed_demo): a group of alice, bob and carol and two one-to-one conversations.

Written straight to the tables, not through services: seeding is a fixture, not an action, so it announces
nothing. Running it again changes nothing.
"""

from datetime import timedelta
from typing import Any

from django.utils import timezone

from messaging.models import Conversation, Message, Participant
from messaging.services import direct_key

GROUP_TITLE = "Weekend plans"
# (title or None for one-to-one, [members], [(author, text), ...]); the members are seed_demo's.
CONVERSATIONS: list[tuple[str | None, list[str], list[tuple[str, str]]]] = [
    (
        GROUP_TITLE,
        ["alice", "bob", "carol"],
        [
            ("alice", "Who is up for the harbour walk on Saturday?"),
            ("bob", "Count me in. Morning or afternoon?"),
            ("carol", "Afternoon, then we can stay for the sunset stream."),
        ],
    ),
    (None, ["alice", "bob"], [("bob", "Did you see the keynote?"), ("alice", "Watching it live right now!")]),
    (None, ["alice", "carol"], [("carol", "Lunch tomorrow?")]),
]


def seed_conversations(members: dict[str, Any]) -> int:
    """Create the demo conversations among `members` (username -> user) unless they exist; how many were made."""
    created = 0
    now = timezone.now()
    for title, usernames, lines in CONVERSATIONS:
        people = [members[name] for name in usernames]
        if title is None:
            key = direct_key(people[0].pk, people[1].pk)
            if Conversation.objects.filter(direct_key=key).exists():
                continue
            conversation = Conversation(kind=Conversation.Kind.DIRECT, direct_key=key)
        else:
            if Conversation.objects.filter(kind=Conversation.Kind.GROUP, title=title).exists():
                continue
            conversation = Conversation(kind=Conversation.Kind.GROUP, title=title)
        started = now - timedelta(minutes=10 * len(lines))
        conversation.created_by = people[0]
        conversation.created = started
        conversation.updated = started + timedelta(minutes=10 * (len(lines) - 1))
        conversation.last_seq = len(lines)
        conversation.save()
        authors = [members[author] for author, _ in lines]
        Message.objects.bulk_create(
            Message(
                conversation=conversation,
                seq=seq,
                author=author,
                text=text,
                created=started + timedelta(minutes=10 * (seq - 1)),
            )
            for seq, (author, (_, text)) in enumerate(zip(authors, lines, strict=True), start=1)
        )
        # Each has read up to her own last message: what she wrote since is unread for the others.
        Participant.objects.bulk_create(
            Participant(
                conversation=conversation,
                member=person,
                joined=started,
                last_read_seq=max((seq for seq, a in enumerate(authors, start=1) if a.pk == person.pk), default=0),
            )
            for person in people
        )
        created += 1
    return created
