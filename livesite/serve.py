"""`python -m livesite.serve [daphne options] livesite.asgi:application`: Daphne on uvloop, with a deep accept queue.

Daphne picks up uvloop only if its event-loop policy is set before `daphne.server` is imported, which
happens before the ASGI application is loaded; so the policy cannot be set from livesite/asgi.py. This
wrapper sets it, then runs Daphne's own command line unchanged. Plain `daphne ...` works too, on the
default asyncio loop.

It also listens with a backlog of LISTEN_BACKLOG instead of Twisted's 50: when a worker dies, its thousands
of clients reconnect to the others within seconds, and connections past a full accept queue are dropped by
the kernel and retried by the client only after 1, 3, 7 s (TCP's SYN back-off). The kernel caps it at
net.core.somaxconn (4096 on these machines).
"""

import asyncio

import uvloop

LISTEN_BACKLOG = 4096


def with_backlog(descriptions: list[str], backlog: int = LISTEN_BACKLOG) -> list[str]:
    """Daphne's endpoint descriptions, each TCP one with `backlog` unless it names its own."""
    return [
        f"{description}:backlog={backlog}"
        if description.startswith("tcp:") and ":backlog=" not in description
        else description
        for description in descriptions
    ]


def main() -> None:
    asyncio.set_event_loop_policy(uvloop.EventLoopPolicy())
    from daphne import cli  # Imported here: after the policy, or it is ignored.

    build = cli.build_endpoint_description_strings
    cli.build_endpoint_description_strings = lambda *args, **kwargs: with_backlog(build(*args, **kwargs))
    cli.CommandLineInterface.entrypoint()


if __name__ == "__main__":
    main()
