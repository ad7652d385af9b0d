"""The ``gibench`` command line: :func:`main`, which parses the arguments and runs the command.

    gibench list {regularizers,evaluators,datasets,backbones,suites} [--verbose]
    gibench run --suite NAME|PATH [--runs-dir DIR] [--data-root DIR] [--download] [--device cpu|cuda] [--dry-run]
                [--retry-failed] [--eval-batch-size N] [--executor local|ray] [--address ADDR] [--gpus-per-job F]
                [--check] [--estimate [--throughput PASSES_PER_SECOND]] [--workers N]
    gibench doctor [--runs-dir DIR] [--fix]
    gibench report [--runs-dir DIR] [--csv FILE] [--all-metrics] [--ranks] [--sanity]
    gibench submit --name NAME --author A [--author B] [--description TEXT] [--link URL] [--suite NAME] [--out DIR]
                   [--max-artifact-mb MB]
    gibench validate SUBMISSION_DIR
    gibench verify SUBMISSION_DIR [--jobs N] [--seed S] [--runs-dir DIR] [--tolerance T] [--device D] [--data-root DIR]
    gibench export --out DIR [--runs-dir DIR] [--dataset D] [--backbone B] [--regularizer R] [--seed S] [--job H]
                   [--train T] [--overwrite] [--data-root DIR]
    gibench load SOURCE [--dataset D] [--backbone B] [--regularizer R] [--seed S] [--job H] [--train T]
                 [--sha256 HEX] [--download] [--cache-dir DIR] [--device D] [--data-root DIR] [--json]
    gibench leaderboard build [--submissions DIR] [--out DIR] [--skip-invalid]
    gibench leaderboard serve [--out DIR] [--port N]

User errors (gibench.core.errors.GibenchError) print one message without a traceback and exit with status 2.

The parser is :mod:`gibench.cli.parser`; each command lives in its own module (``list_plugins``, ``run``, ``doctor``,
``report``, ``submit``, ``validate``, ``verify``, ``export``, ``load``, ``leaderboard``; ``workers`` starts the other
processes of ``run --workers N``). Every command prints to the
consoles of :mod:`gibench.cli._shared`; a test captures the output by replacing ``gibench.cli._shared.stdout``.
"""

from __future__ import annotations

import errno

from rich.markup import escape

from gibench.cli import _shared
from gibench.cli.list_plugins import default_text, plugin_summary
from gibench.cli.parser import DEFAULT_RUNS_DIR, _parser
from gibench.core.errors import GibenchError

__all__ = ["DEFAULT_RUNS_DIR", "_parser", "default_text", "main", "plugin_summary"]

_USER_FS_ERRORS = {errno.EACCES, errno.EPERM, errno.EROFS, errno.ENOTDIR, errno.EISDIR, errno.ENOSPC, errno.EEXIST}


def main(argv: list[str] | None = None) -> int:
    parser = _parser()
    args = parser.parse_args(argv)
    if not getattr(args, "handler", None):
        parser.print_help()
        return 2
    try:
        return args.handler(args) or 0
    except GibenchError as exc:
        _shared.stderr.print(f"[bold red]error:[/] {escape(str(exc))}")
        return 2
    except OSError as exc:  # the file system refused (permissions, read-only, full, a file where a folder should be)
        if exc.errno not in _USER_FS_ERRORS:
            raise
        where = f"{exc.filename}: " if exc.filename else ""
        _shared.stderr.print(f"[bold red]error:[/] {escape(where + (exc.strerror or str(exc)))}. Check that path (its "
                             "permissions, free space, whether it is a file or a folder) or pass another one.")
        return 2
    except KeyboardInterrupt:
        _shared.stderr.print("interrupted; finished jobs are kept and a rerun resumes from them.")
        return 130
