"""``gibench leaderboard build [--submissions DIR] [--out DIR] [--skip-invalid]`` and ``gibench leaderboard serve
[--out DIR] [--port N]``: render the submissions into the static leaderboard site, and serve it on localhost."""

from __future__ import annotations

import argparse
import errno

from gibench.cli import _shared
from gibench.core.errors import GibenchError

__all__ = ["cmd_leaderboard_build", "cmd_leaderboard_serve"]


def cmd_leaderboard_build(args: argparse.Namespace) -> int:
    from gibench.leaderboard.build import build_site

    index = build_site(args.submissions, args.out, skip_invalid=args.skip_invalid)
    _shared.stdout.print(f"leaderboard page: {index.resolve()}", soft_wrap=True)
    return 0


def cmd_leaderboard_serve(args: argparse.Namespace) -> int:
    import functools
    import http.server

    if not (args.out / "index.html").exists():
        raise GibenchError(f"no site at {args.out}; run `gibench leaderboard build --out {args.out}` first.")
    if not 0 <= args.port <= 65535:
        raise GibenchError(f"--port must be between 0 and 65535, got {args.port}.")
    handler = functools.partial(http.server.SimpleHTTPRequestHandler, directory=str(args.out))
    try:
        server = http.server.ThreadingHTTPServer(("127.0.0.1", args.port), handler)
    except OSError as exc:
        if exc.errno == errno.EADDRINUSE:
            raise GibenchError(f"port {args.port} is already in use on 127.0.0.1 (another server?); pick another "
                               f"with --port, e.g. --port {args.port + 1}, or --port 0 for any free port.") from None
        raise GibenchError(f"cannot serve on 127.0.0.1:{args.port}: {exc.strerror or exc}.") from None
    with server:
        args.port = server.server_address[1]
        _shared.stdout.print(f"serving {args.out} at http://127.0.0.1:{args.port}/ (Ctrl-C to stop)")
        server.serve_forever()
    return 0

