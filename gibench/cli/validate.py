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
    if submission.models is not None:
        _shared.stdout.print(f"{submission.models.models} referenced model(s) in models.json, its SHA-256 checked (the "
                             "files themselves are checked when loaded: gibench load, gibench verify --reevaluate)")
    status = verification_status(loaded)
    check = {"retrained": " (re-trained)", "reevaluated": " (submitted models re-evaluated)"}.get(status.check, "")
    _shared.stdout.print(escape(f"verification: {status.state}" + (f"{check} on {status.date} (tolerance "
                                                                   f"{status.tolerance:g})" if status.date else "")
                        + (f"; {status.detail}" if status.detail else "")), soft_wrap=True)
    return 0

