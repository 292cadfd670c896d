"""`make run-cluster`: N Daphne (or uvicorn) workers on Redis sharing one listening socket (one address).

Production runs each worker under its own supervisor (systemd, supervisord) with the same `--fd` trick or
separate ports behind a proxy; this is the same shape in one foreground command. A worker that dies is
started again (its clients reconnect to the others meanwhile), at most MAX_RESTARTS_PER_MINUTE times a
minute, past which something is wrong with every start and the cluster stops. Ctrl-C stops them all.
"""

import argparse
import os
import signal
import socket
import subprocess
import sys
import time

import redis

from livesite import devredis, redisconf

MAX_RESTARTS_PER_MINUTE = 10
# Each server's command line on an inherited socket. uvicorn with httptools and uvloop costs less CPU per
# request and per delivery than Daphne (docs/benchmarks.md A.14, A.15), but has no header size limit or
# header timeout (bodies are guarded under both: realtime.servers.guard): run it behind the deploy kit's nginx.
SERVERS = {
    "daphne": ["-m", "livesite.serve", "--fd", "{fd}"],
    "uvicorn": [
        "-m",
        "uvicorn",
        "--fd",
        "{fd}",
        "--loop",
        "uvloop",
        "--http",
        "httptools",
        "--lifespan",
        "on",
        "--timeout-graceful-shutdown",
        "5",
        # As deploy/systemd/uvicorn.conf: idle keep-alive connections outlive a proxy's (nginx: 60 s), and
        # X-Forwarded-* are believed by the site itself, only with TRUST_PROXY_HEADERS.
        "--timeout-keep-alive",
        "75",
        "--no-proxy-headers",
    ],
}
APPLICATION = "livesite.asgi:application"


def _ensure_redis(url: str) -> devredis.RedisProcess | None:
    """Nothing if a Redis answers at `url`; else a redis-server started on its port (loopback, no persistence)."""
    client = redis.Redis.from_url(url)
    try:
        client.ping()
        return None
    except redis.ConnectionError:
        pass
    port = client.connection_pool.connection_kwargs.get("port", 6379)
    print(f"starting redis-server on port {port}")  # noqa: T201
    try:
        return devredis.start(port)
    except (OSError, RuntimeError) as exc:
        raise SystemExit(f"redis-server did not start on port {port}: {exc}") from exc


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=8000)
    parser.add_argument("--server", choices=sorted(SERVERS), default="daphne")
    args = parser.parse_args()
    url = os.environ.get("REDIS_URL")
    if not url:
        raise SystemExit("REDIS_URL must be set: several workers share events through Redis")
    try:
        shards = redisconf.parse(url)
    except redisconf.InvalidRedisUrl as exc:
        raise SystemExit(str(exc)) from None
    # A development convenience: plain servers that do not answer are started here; Sentinel-managed ones
    # are the operator's.
    redis_processes = [_ensure_redis(shard.url) for shard in shards if not shard.master]

    listener = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    listener.bind((args.host, args.port))
    listener.listen(4096)
    listener.set_inheritable(True)
    fd = listener.fileno()

    def start_worker(index: int) -> "subprocess.Popen[bytes]":
        command = [part.format(fd=fd) for part in SERVERS[args.server]]
        process = subprocess.Popen([sys.executable, *command, APPLICATION], pass_fds=[fd])  # noqa: S603
        print(f"worker {index} started, pid {process.pid}", flush=True)  # noqa: T201
        return process

    workers = [start_worker(index) for index in range(args.workers)]
    serving = f"{args.workers} {args.server} workers serving http://{args.host}:{args.port}/ (Ctrl-C stops them)"
    print(serving, flush=True)  # noqa: T201
    signal.signal(signal.SIGTERM, signal.default_int_handler)
    restarts: list[float] = []
    try:
        while True:
            time.sleep(0.5)
            for index, process in enumerate(workers):
                if process.poll() is None:
                    continue
                now = time.monotonic()
                restarts = [at for at in restarts if now - at < 60] + [now]
                if len(restarts) > MAX_RESTARTS_PER_MINUTE:
                    raise SystemExit(f"workers died {len(restarts)} times within a minute: stopping the cluster")
                print(f"worker {index} (pid {process.pid}) exited with {process.returncode}: restarting", flush=True)  # noqa: T201
                workers[index] = start_worker(index)
    except KeyboardInterrupt:
        pass
    finally:
        for process in workers:
            process.terminate()
        for process in workers:
            process.wait(timeout=10)
        for redis_process in redis_processes:
            if redis_process is not None:
                redis_process.stop()


if __name__ == "__main__":
    main()
