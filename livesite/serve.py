"""`python -m livesite.serve [daphne options] livesite.asgi:application`: Daphne on uvloop.

Daphne picks up uvloop only if its event-loop policy is set before `daphne.server` is imported, which
happens before the ASGI application is loaded; so the policy cannot be set from livesite/asgi.py. This
wrapper sets it, then runs Daphne's own command line unchanged. Plain `daphne ...` works too, on the
default asyncio loop.
"""

import asyncio

import uvloop


def main() -> None:
    asyncio.set_event_loop_policy(uvloop.EventLoopPolicy())
    from daphne.cli import CommandLineInterface  # Imported here: after the policy, or it is ignored.

    CommandLineInterface.entrypoint()


if __name__ == "__main__":
    main()
