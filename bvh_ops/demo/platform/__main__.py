"""``python -m bvh_ops.demo.platform --dsn … --port …``: the sample platform in the foreground.
The DSN may come from the environment (BVH_PLATFORM_DSN) instead, which keeps the password out
of ``ps``; ``--fd`` serves an already-bound socket (what serve_platform passes)."""

from __future__ import annotations

import argparse
import os
import socket
import sys
from pathlib import Path

import uvicorn

from bvh_ops.demo.platform.app import create_app
from bvh_ops.demo.platform.cache import DEFAULT_REDIS_URL
from bvh_ops.demo.platform.serve import DSN_ENV
from bvh_ops.demo.platform.state import PlatformConfig


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m bvh_ops.demo.platform", description=__doc__)
    p.add_argument("--dsn", help=f"the sample lottery database (default: ${DSN_ENV})")
    p.add_argument("--host", default="127.0.0.1")
    p.add_argument("--port", type=int, default=8080)
    p.add_argument("--fd", type=int, help="serve this listening socket instead of --host/--port")
    p.add_argument("--log-path", default="platform-log.jsonl", help="JSON log lines go here")
    p.add_argument("--cache", default=DEFAULT_REDIS_URL, help="Redis URL, or 'memory' (default: %(default)s, "
                   "falling back to memory when it does not answer)")
    p.add_argument("--window", type=float, default=60.0, help="seconds of requests behind responseTime/errorRate")
    p.add_argument("--slow-request-ms", type=float, default=1000.0)
    p.add_argument("--debug-log", action="store_true", help="also write debug-category lines")
    p.add_argument("--pid-file", help="write the process id here (removed at exit); SIGUSR1 reopens the log file "
                                      "(a log rotation renamed it)")
    args = p.parse_args(argv)
    dsn = args.dsn or os.environ.get(DSN_ENV)
    if not dsn:
        p.error(f"give --dsn or set {DSN_ENV}")
    config = PlatformConfig(dsn=dsn, log_path=Path(args.log_path), cache_url=args.cache, window_s=args.window,
                            slow_request_ms=args.slow_request_ms, debug_log=args.debug_log,
                            pid_file=Path(args.pid_file) if args.pid_file else None)
    app = create_app(config)
    import signal

    from bvh_ops.demo.platform.logs import reopen_on

    reopen_on(signal.SIGUSR1, [app.state.platform.log])
    server = uvicorn.Server(uvicorn.Config(app, host=args.host, port=args.port, log_level="warning",
                                           access_log=False, timeout_graceful_shutdown=3))
    sockets = [socket.socket(fileno=args.fd)] if args.fd is not None else None
    server.run(sockets=sockets)
    return 0


if __name__ == "__main__":
    sys.exit(main())
