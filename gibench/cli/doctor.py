"""``gibench doctor [--runs-dir DIR] [--fix]`` (and ``gibench run --check``): scan a runs directory for damaged, stale
or orphaned files and, with ``--fix``, move them aside."""

from __future__ import annotations

import argparse

from rich.markup import escape
from rich.table import Table

from gibench.cli import _shared

__all__ = ["cmd_doctor"]


def cmd_doctor(args: argparse.Namespace) -> int:
    from gibench.store.doctor import doctor

    problems = doctor(args.runs_dir, fix=args.fix)
    if not problems:
        _shared.stdout.print(f"{args.runs_dir}: no damaged, stale or orphaned files.")
        return 0
    table = Table("kind", "path", "problem", *(["fixed"] if args.fix else []), title=f"doctor: {args.runs_dir}")
    for column in table.columns[1:]:
        column.overflow = "fold"  # paths are shown whole, folded over lines, never cut
    colours = {"damaged": "red", "stale": "yellow", "orphaned": "magenta", "info": "cyan"}
    for p in problems:
        table.add_row(f"[{colours[p.kind]}]{p.kind}[/]", escape(str(p.path)), escape(p.what),
                      *([escape(p.fixed) or "-"] if args.fix else []))
    _shared.stdout.print(table)
    unfixed = [p for p in problems if p.kind in ("damaged", "stale") and not p.fixed]
    if unfixed and not args.fix:
        _shared.stdout.print(f"{len(unfixed)} damaged or stale file(s); `gibench doctor --runs-dir {args.runs_dir} "
                             "--fix` moves them aside (into quarantine/) so that the next run recomputes them.",
                             soft_wrap=True)
    return 1 if unfixed else 0

