"""``gibench validate SUBMISSION_DIR``: check a submission folder against the schema and print its verification
status."""

from __future__ import annotations

import argparse

from rich.markup import escape

from gibench.cli import _shared

__all__ = ["cmd_validate"]


def cmd_validate(args: argparse.Namespace) -> int:
    from gibench.submissions.build import load_submission
    from gibench.submissions.verify import verification_status

    loaded = load_submission(args.path)
    submission, record = loaded.submission, loaded.submission.artifacts
    _shared.stdout.print(f"{args.path}: valid submission {submission.id!r}", soft_wrap=True)
    _shared.stdout.print(f"{len(loaded.results)} result rows, every value within its metric's declared range"
                         + (f"; {len(record.files)} artifact(s), {record.total_bytes / 1e6:.3g} MB, SHA-256 checked"
                            if record is not None else ""))
    status = verification_status(loaded)
    _shared.stdout.print(escape(f"verification: {status.state}" + (f" on {status.date} (tolerance {status.tolerance:g})"
                                                                   if status.date else "")
                        + (f"; {status.detail}" if status.detail else "")), soft_wrap=True)
    return 0

