"""``gibench submit --name NAME --author A ... [--out DIR]``: package a runs directory's results as
``submissions/<id>/`` for the leaderboard."""

from __future__ import annotations

import argparse

from gibench.cli import _shared

__all__ = ["cmd_submit"]


def cmd_submit(args: argparse.Namespace) -> int:
    from gibench.submissions.build import build_submission, load_submission

    # a mapping, so that a blank --name or a javascript: --link is a SubmissionError naming the option's field
    metadata = {"name": args.name, "authors": args.authors, "description": args.description, "links": args.links}
    path = build_submission(args.runs_dir, args.out, metadata, suite_name=args.suite, warn=_shared.warn,
                            max_artifact_mb=args.max_artifact_mb)
    record = load_submission(path).submission.artifacts
    _shared.stdout.print(f"wrote submission {path}")
    if record is not None:
        _shared.stdout.print(f"artifacts: {len(record.files)} file(s), {record.total_bytes / 1e6:.3g} MB of the "
                             f"{record.limit_bytes / 1e6:g} MB limit"
                             + (f"; {len(record.left_out)} left out (listed under 'artifacts.left_out' in "
                                "submission.json)" if record.left_out else ""))
    return 0

