"""``gibench submit --name NAME --author A ... [--out DIR] [--models DIR --models-url PREFIX]``: package a runs
directory's results as ``submissions/<id>/`` for the leaderboard, with ``models.json`` referencing its exported
models."""

from __future__ import annotations

import argparse
from pathlib import Path

from rich.markup import escape

from gibench.cli import _shared

__all__ = ["cmd_submit"]


def cmd_submit(args: argparse.Namespace) -> int:
    from gibench.submissions.build import build_submission, load_submission

    # a mapping, so that a blank --name or a javascript: --link is a SubmissionError naming the option's field
    metadata = {"name": args.name, "authors": args.authors, "description": args.description, "links": args.links}
    path = build_submission(args.runs_dir, args.out, metadata, suite_name=suite_name(args.suite), warn=_shared.warn,
                            max_artifact_mb=args.max_artifact_mb, models_dir=args.models, models_url=args.models_url)
    loaded = load_submission(path)
    record = loaded.submission.artifacts
    _shared.stdout.print(f"wrote submission {path}")
    if loaded.submission.models is not None:
        from gibench.submissions.submitted_models import submitted_models

        with_model = {entry.identity.job_hash for entry in submitted_models(loaded)}
        without = sorted(set(loaded.results["job_hash"]) - with_model)
        _shared.stdout.print(escape(f"models.json: {len(with_model)} model(s) under {args.models_url}"
                                    + (f"; {len(without)} job(s) without a model in {args.models} (e.g. "
                                       f"{without[0]})" if without else "")), soft_wrap=True)
    if record is not None:
        _shared.stdout.print(f"artifacts: {len(record.files)} file(s), {record.total_bytes / 1e6:.3g} MB of the "
                             f"{record.limit_bytes / 1e6:g} MB limit"
                             + (f"; {len(record.left_out)} left out (listed under 'artifacts.left_out' in "
                                "submission.json)" if record.left_out else ""))
    return 0


def suite_name(value: str | None) -> str | None:
    """``--suite`` as a suite name or, as ``gibench run --suite`` takes it, a suite file: then the ``name`` it declares
    (the name the runs directory's manifest records). A file that does not load is a ConfigError naming it."""
    if value is None or not (value.endswith((".yaml", ".yml")) or Path(value).is_file()):
        return value
    from gibench.suites.suite import load_suite

    return load_suite(value).name
