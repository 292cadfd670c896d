"""seed_demo: the demo's members, live videos and conversations, created once; running it again changes nothing."""

from datetime import timedelta
from typing import Any

from django.conf import settings
from django.contrib.auth import get_user_model
from django.core.management.base import BaseCommand
from django.db import transaction
from django.utils import timezone

from likes.models import LiveVideo
from messaging.demo import seed_conversations

DEFAULT_DEMO_PASSWORD = "livesite-demo"  # noqa: S105 (the documented demo password, not a secret)
ADMIN = "admin"
MEMBERS = [("alice", "Alice"), ("bob", "Bob"), ("carol", "Carol")]
# slug, title, owner, description, minutes since start, minutes it lasted (None: still live)
VIDEOS = [
    (
        "morning-keynote",
        "Morning keynote",
        "alice",
        "What we shipped this quarter, live from the main stage.",
        20,
        None,
    ),
    ("live-coding-channels", "Live coding: Django Channels", "bob", "Building an SSE fan-out from scratch.", 45, None),
    ("harbour-sunset", "Sunset over the harbour", "carol", "A quiet stream to end the day.", 5, None),
    ("yesterdays-qa", "Yesterday's Q&A", "alice", "Questions from the community, answered.", 26 * 60, 90),
]


class Command(BaseCommand):
    help = (
        "Create the demo members (admin, alice, bob, carol), a few live videos and their conversations; "
        "safe to run again."
    )

    def handle(self, *args: Any, **options: Any) -> None:
        password = getattr(settings, "DEMO_PASSWORD", None) or DEFAULT_DEMO_PASSWORD
        with transaction.atomic():
            created = self._members(password)
            created += self._videos()
            created += seed_conversations(
                {user.username: user for user in get_user_model().objects.filter(username__in=[u for u, _ in MEMBERS])}
            )
        self.stdout.write(
            self.style.SUCCESS(f"seed_demo: {created} object(s) created") if created else "seed_demo: up to date"
        )
        self.stdout.write(
            f"Sign in with password {password!r} (set DEMO_PASSWORD to change it):\n"
            f"  members {', '.join(username for username, _ in MEMBERS)}: http://127.0.0.1:8000/accounts/login/\n"
            "  their conversations: http://127.0.0.1:8000/messages/\n"
            f"  {ADMIN} (superuser): http://127.0.0.1:8000/admin/"
        )

    def _members(self, password: str) -> int:
        user_model = get_user_model()
        created = 0
        for username, first_name, staff in [(ADMIN, "", True)] + [(u, name, False) for u, name in MEMBERS]:
            user, new = user_model.objects.get_or_create(
                username=username,
                defaults={"first_name": first_name, "is_staff": staff, "is_superuser": staff},
            )
            created += new
            # Keep the documented password working, but do not rewrite a hash that already matches it.
            if new or not user.check_password(password):
                user.set_password(password)
                user.save(update_fields=["password"])
        return created

    def _videos(self) -> int:
        owners = {user.username: user for user in get_user_model().objects.filter(username__in=[u for u, _ in MEMBERS])}
        now = timezone.now()
        created = 0
        for slug, title, owner, description, started_minutes_ago, lasted_minutes in VIDEOS:
            started_at = now - timedelta(minutes=started_minutes_ago)
            ended = lasted_minutes is not None
            _, new = LiveVideo.objects.get_or_create(
                slug=slug,
                defaults={
                    "title": title,
                    "owner": owners[owner],
                    "description": description,
                    "started_at": started_at,
                    "status": LiveVideo.Status.ENDED if ended else LiveVideo.Status.LIVE,
                    "ended_at": started_at + timedelta(minutes=lasted_minutes) if lasted_minutes is not None else None,
                },
            )
            created += new
        return created
