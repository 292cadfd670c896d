"""The database connection of the likes path's own threads (the writer, the flusher): warm while work keeps coming.

Outside a request nothing closes a thread's connection, so these threads honour CONN_MAX_AGE themselves; but
with CONN_MAX_AGE 0 (the default) that meant a new connection per batch: on SQLite a connection and its PRAGMAs
per batch of likes and per coalescing flush (7 % of a busy worker's samples, docs/benchmarks.md), on PostgreSQL
a trip through the pool. A thread that knows more work is already waiting keeps its connection instead; the
last batch of a burst closes it, so an idle process holds none (and tests can drop their database).
"""

from django.db import close_old_connections, connections


def begin() -> None:
    """Before a batch, in the thread that runs it: drop a connection that broke (the batch then reconnects)."""
    for connection in connections.all(initialized_only=True):
        if connection.connection is None:
            continue
        if connection.get_autocommit() != connection.settings_dict["AUTOCOMMIT"]:
            connection.close()
        elif connection.errors_occurred:
            if connection.is_usable():
                connection.errors_occurred = False
            else:
                connection.close()


def end(*, keep: bool) -> None:
    """After a batch: keep this thread's connection for the next one if `keep`, else honour CONN_MAX_AGE."""
    if keep:
        begin()  # a connection that broke during the batch is not kept
    else:
        close_old_connections()
