"""Fixtures for system tests: a migrated SQLite file, private redis-servers and Daphne workers."""

import json
import logging
from collections.abc import Callable, Iterator

import pytest

from tests.system.harness import RedisServer, Worker, base_env, run_django

# One line per request drowns the failure output.
logging.getLogger("httpx").setLevel(logging.WARNING)

USERS_SCRIPT = """
import json
from django.contrib.auth.models import User
from rest_framework.authtoken.models import Token
tokens = {}
for name, staff in [("admin", True), ("alice", False), ("bob", False)]:
    user, _ = User.objects.get_or_create(username=name, defaults={"is_staff": staff, "is_superuser": staff})
    user.set_password("pw-" + name)
    user.save()
    tokens[name] = {"token": Token.objects.get_or_create(user=user)[0].key, "id": user.pk}
print(json.dumps(tokens))
"""


@pytest.fixture(scope="session")
def site(tmp_path_factory: pytest.TempPathFactory) -> dict:
    """A migrated database shared by every worker of the session, with users admin, alice and bob."""
    tmp = tmp_path_factory.mktemp("site")
    env = base_env(tmp)
    run_django(env, "from django.core.management import call_command; call_command('migrate', verbosity=0)")
    members = json.loads(run_django(env, USERS_SCRIPT))
    return {"tmp": tmp, "members": members}


@pytest.fixture
def redis_server() -> Iterator[RedisServer]:
    server = RedisServer().start()
    yield server
    server.stop()


@pytest.fixture
def start_worker(site: dict) -> Iterator[Callable[..., Worker]]:
    """Start Daphne workers with the given environment overrides; all are stopped after the test."""
    started: list[Worker] = []

    def start(redis_url: str = "", name: str = "worker", server: str = "daphne", **overrides: str) -> Worker:
        env = base_env(site["tmp"], **({"REDIS_URL": redis_url} if redis_url else {}), **overrides)
        worker = Worker(env, name=name, server=server).start()
        started.append(worker)
        return worker

    yield start
    for worker in started:
        worker.stop()


@pytest.fixture
def tokens(site: dict) -> dict[str, str]:
    return {name: member["token"] for name, member in site["members"].items()}


@pytest.fixture
def member_ids(site: dict) -> dict[str, int]:
    return {name: member["id"] for name, member in site["members"].items()}
