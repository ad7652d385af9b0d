"""``gibench verify SUBMISSION_DIR [--jobs N] [--seed S] ...``: re-train and re-evaluate a random sample of a
submission's jobs and compare each metric with the submitted one within a tolerance; with ``--reevaluate
[--download]``, load the submitted models of the sample instead (checked against their SHA-256) and evaluate them
again (gibench.submissions.reevaluate)."""

from __future__ import annotations

import argparse

from rich.markup import escape
from rich.table import Table

from gibench.cli import _shared

__all__ = ["cmd_verify"]


def cmd_verify(args: argparse.Namespace) -> int:
    from gibench.core.errors import ConfigError
    from gibench.submissions.build import load_submission
    from gibench.submissions.reevaluate import reevaluate_submission
    from gibench.submissions.verify import VERIFICATION_FILE, verify_submission

    if (args.download or args.cache_dir is not None) and not args.reevaluate:
        raise ConfigError("--download and --cache-dir apply to the submitted models, which only --reevaluate loads. "
                          "Fix: add --reevaluate, or leave them out (re-training downloads nothing).")
    loaded = load_submission(args.path)
    if args.reevaluate:
        result = reevaluate_submission(loaded, jobs=args.jobs, seed=args.seed, tolerance=args.tolerance,
                                       runs_dir=args.runs_dir, device=args.device, data_root=args.data_root,
                                       download=args.download, cache_dir=args.cache_dir, warn=_shared.warn)
    else:
        result = verify_submission(loaded, jobs=args.jobs, seed=args.seed, tolerance=args.tolerance,
                                   runs_dir=args.runs_dir, device=args.device, data_root=args.data_root,
                                   warn=_shared.warn)
    for job in result.jobs:
        weights = (f" (weights {job['weights_sha256'][:16]}… from {job['url']})"
                   if job.get("weights_sha256") and job["state"] == "re-evaluated" else "")
        _shared.stdout.print(escape(f"job {job['job_hash']} {job['label']}: {job['state']}{weights}"
                                    + (f" ({job['reason']})" if job.get("reason") else "")), soft_wrap=True)
    view = Table(title=f"verify {loaded.submission.id}" + (" (submitted models re-evaluated)" if args.reevaluate
                                                            else "") + f": tolerance {result.tolerance:g} (absolute)")
    for column in ("evaluator", "metric", "rows", "max |Δ|", "outcome"):
        view.add_column(column)
    colours = {"agrees": "green", "disagrees": "red", "stale": "yellow"}
    for m in result.metrics:
        diff = "-" if m.max_abs_diff is None else f"{m.max_abs_diff:.3g}"
        view.add_row(escape(f"{m.evaluator} v{m.evaluator_version}"), escape(m.metric), str(m.rows), diff,
                     f"[{colours[m.outcome]}]{m.outcome}[/]")
    _shared.stdout.print(view)
    if result.environment_changes:
        _shared.stdout.print(escape(
            "the environment differs from the one the sampled jobs were run in: " + ", ".join(
                f"{k} {a} → {b}" for k, (a, b) in sorted(result.environment_changes.items()))
            + ". Numbers are reproduced bit for bit only in the same environment; elsewhere last-bit differences grow"
              " through training and evaluation, so compare with a larger --tolerance (for example 0.02)"
            + ("." if args.reevaluate else ", or re-evaluate the submitted models (--reevaluate), which trains "
                                           "nothing.")), soft_wrap=True)
    for check in result.selections:  # each recorded selection against the one the submitted rows give
        colour = {"agrees": "green", "disagrees": "red"}.get(check["outcome"], "yellow")
        _shared.stdout.print(f"selection of suite {escape(check['suite'])}: [{colour}]{check['outcome']}[/]"
                             + "".join(f"\n  {escape(line)}" for line in check["differences"]), soft_wrap=True)
    what = "re-evaluated from their submitted models" if args.reevaluate else "re-run"
    _shared.stdout.print(escape(f"{result.status}: {len(result.jobs)} job(s) {what}; record written to "
                                f"{args.path / VERIFICATION_FILE}"), soft_wrap=True)
    return 0 if result.status == "verified" else 1

