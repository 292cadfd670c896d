"""Writes and reads of the Presence table (the admin's copy of the store). Sync: call it through the services."""

from collections.abc import Iterable

from django.contrib.auth import get_user_model
from django.db import connections, router, transaction

from presence.models import Presence
from presence.status import ONLINE, MemberStatus

# 4 parameters per row; SQLite allows 32,766 per statement, PostgreSQL 65,535.
_ROWS_PER_STATEMENT = 500


def record(rows: Iterable[MemberStatus]) -> int:
    """Copy member statuses into the table, newest first wins; returns how many rows were offered.

    Writes racing from several workers, or arriving late, can never roll a row back: a row changes only if the
    offered status is newer (a later `changed_at`, or the same transition seen later). Members without a user
    (deleted since) are skipped. Rows without `changed_at` (never seen) are ignored.
    """
    latest: dict[int, MemberStatus] = {}
    for row in rows:
        if row.changed_at is None or row.last_seen is None:
            continue
        kept = latest.get(row.member)
        # One statement may not touch a row twice (PostgreSQL refuses), so keep only each member's newest.
        if kept is None or (row.changed_at, row.last_seen) > (kept.changed_at, kept.last_seen):
            latest[row.member] = row
    if not latest:
        return 0
    alias = router.db_for_write(Presence)
    user_model = get_user_model()
    with transaction.atomic(using=alias):
        users = set(user_model._default_manager.using(alias).filter(pk__in=latest).values_list("pk", flat=True))
        fresh = [row for member, row in latest.items() if member in users]
        for start in range(0, len(fresh), _ROWS_PER_STATEMENT):
            _upsert(alias, fresh[start : start + _ROWS_PER_STATEMENT])
    return len(fresh)


def _upsert(alias: str, rows: list[MemberStatus]) -> None:
    # A conditional upsert is one atomic statement with the same syntax on SQLite (>= 3.24) and PostgreSQL; the
    # ORM's bulk_create(update_conflicts=True) cannot say "only if newer", and read-compare-write would need row
    # locks SQLite does not have.
    connection = connections[alias]
    quote = connection.ops.quote_name
    table = quote(Presence._meta.db_table)
    member, online, last_seen, changed_at = (
        quote(_column(name)) for name in ("member", "online", "last_seen", "changed_at")
    )
    values = ", ".join(["(%s, %s, %s, %s)"] * len(rows))
    sql = (
        f"INSERT INTO {table} ({member}, {online}, {last_seen}, {changed_at}) VALUES {values} "  # noqa: S608 (names quoted, values bound)
        f"ON CONFLICT ({member}) DO UPDATE SET {online} = excluded.{online}, "
        f"{last_seen} = excluded.{last_seen}, {changed_at} = excluded.{changed_at} "
        f"WHERE {table}.{changed_at} < excluded.{changed_at} "
        f"OR ({table}.{changed_at} = excluded.{changed_at} AND {table}.{last_seen} < excluded.{last_seen})"
    )
    params: list[int | bool | float | None] = []
    for row in rows:
        params.extend([row.member, row.status == ONLINE, row.last_seen, row.changed_at])
    with connection.cursor() as cursor:
        cursor.execute(sql, params)


def online_member_ids() -> list[int]:
    """Members the table says are online."""
    return list(Presence.objects.filter(online=True).values_list("member_id", flat=True))


def lookup(member_ids: list[int]) -> dict[int, Presence]:
    """Rows of these members, by member id."""
    return {row.member_id: row for row in Presence.objects.filter(member_id__in=member_ids)}


def _column(name: str) -> str:
    field = Presence._meta.get_field(name)
    column = getattr(field, "column", None)  # a concrete field's; relations' reverse sides have none
    if not isinstance(column, str):
        raise TypeError(f"Presence.{name} has no column")
    return column
