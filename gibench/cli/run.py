"""``gibench run --suite NAME|PATH ...``: train and evaluate every job of a suite (resumable), with the local or Ray
executor; ``--dry-run`` prints the jobs and their preflight, ``--estimate`` the device-hours, ``--check`` runs
``gibench doctor``; after a run, the report of its results and a local leaderboard page."""

from __future__ import annotations

import argparse
import contextlib
from pathlib import Path

from rich.markup import escape
from rich.table import Table

from gibench.cli import _shared
from gibench.cli.doctor import cmd_doctor
from gibench.cli.report import print_frame, print_selections
from gibench.cli.workers import StartingWorkers, check_workers
from gibench.core.errors import ConfigError

__all__ = ["cmd_run"]


def cmd_run(args: argparse.Namespace) -> int:
    check_workers(args)
    if args.check:  # a scan of --runs-dir, as `gibench doctor`: no other option applies
        args.fix = False
        return cmd_doctor(args)
    from gibench.results.tables import collect_results, evaluations_of
    from gibench.running.options import RunOptions, check_executor_options
    from gibench.running.progress import RichProgress
    from gibench.running.runner import run_suite
    from gibench.suites.suite import load_suite

    # Validated here, before the suite loads, by the code run_suite validates them with (the same messages); an
    # estimate reads the device, data root and batch size, so it is held to the same rules.
    options = RunOptions(data_root=args.data_root, download=args.download, device=args.device,
                         retry_failed=args.retry_failed, eval_batch_size=args.eval_batch_size,
                         claim_timeout_s=args.claim_timeout_s, isolation=args.isolation,
                         job_timeout_s=args.job_timeout_s, eval_timeout_s=args.eval_timeout_s)
    check_executor_options(args.executor, options.device, address=args.address, gpus_per_job=args.gpus_per_job)
    if args.throughput is not None and not args.estimate:
        raise ConfigError("--throughput prices the passes of --estimate; pass --estimate with it, or leave it out.")
    if args.estimate:
        return _print_estimate(args)
    suite = load_suite(args.suite)
    with _other_workers(args) as workers, RichProgress(_shared.stderr) as display:
        observer = display if workers is None else StartingWorkers(display, workers, _say_where_workers_write)
        summary = run_suite(suite, args.runs_dir, options, observer=observer, executor=args.executor,
                            address=args.address, gpus_per_job=args.gpus_per_job, dry_run=args.dry_run)
    if args.dry_run:
        return _print_dry_run(summary)
    frame = collect_results(args.runs_dir, {r.job.hash for r in summary.jobs}, warn=_shared.warn,
                            evaluations=evaluations_of(suite))
    if not frame.empty:
        from gibench.results.collapse import rule_of

        print_frame(frame, all_metrics=False, rule=rule_of([suite.raw]), suites=[suite.raw])
        site = _build_local_site(args.runs_dir, suite.name, frame)
        _shared.stdout.print(f"leaderboard page: {site}", soft_wrap=True)
    if summary.selection is not None:
        print_selections([summary.selection.to_json()])
    failures = summary.failures()
    if failures:
        _shared.stderr.print(f"[red]{len(failures)} failure(s)[/] ({summary.count('failed')} of {len(summary.jobs)} "
                             "job(s) failed to train; the others finished):")
    for line in failures:
        _shared.stderr.print(f"[red]failed:[/] {escape(line)}")
    stopped = workers.failed() if workers else []
    for line in stopped:
        _shared.stderr.print(f"[red]{escape(line)}[/]", soft_wrap=True)
    return 1 if failures or stopped else 0


@contextlib.contextmanager
def _other_workers(args: argparse.Namespace):
    """With ``--workers N`` (N > 1): workers 2..N, to run beside this one (:mod:`gibench.cli.workers`); else None."""
    if args.workers == 1:
        yield None
        return
    from gibench.cli.workers import other_workers

    with other_workers(args) as workers:
        yield workers


def _say_where_workers_write(workers) -> None:
    _shared.stderr.print(escape(f"{len(workers.logs)} more worker(s) share this run; their output: "
                                f"{workers.logs[0].parent}/worker-<i>.log"), soft_wrap=True)


def _print_estimate(args: argparse.Namespace) -> int:
    from gibench.running.estimate import check_throughput, estimate_suite, plan
    from gibench.running.options import resolve_device
    from gibench.suites.suite import load_suite

    throughput = None if args.throughput is None else check_throughput(args.throughput)
    suite = load_suite(args.suite)
    absent = None  # why device-hours cannot be had: no throughput stated and the device is not on this machine
    if throughput is None:
        try:
            resolve_device(args.device)
        except ConfigError as exc:
            absent = str(exc)
    if absent is not None:
        est = plan(suite, args.runs_dir, data_root=args.data_root, eval_batch_size=args.eval_batch_size,
                   retry_failed=args.retry_failed)
        title = f"suite {suite.name}: work in model passes"
    elif throughput is not None:
        est = estimate_suite(suite, args.runs_dir, data_root=args.data_root, eval_batch_size=args.eval_batch_size,
                             throughput=throughput, retry_failed=args.retry_failed)
        title = f"suite {suite.name}: estimated device-hours at {throughput:g} forward-equivalent passes/s"
    else:
        where = args.device or "the default device"
        with _shared.stderr.status(f"calibrating {suite.name} on {where} (cached after the first time)") as status:
            def progress(done: int, total: int, what: str) -> None:
                message = f"calibrating {suite.name} on {where}: unit {done + 1} of {total} not yet cached, {what}"
                status.update(escape(message))
                if not _shared.stderr.is_terminal and done == 0:  # no spinner: say once why this takes a while
                    _shared.stderr.print(f"calibrating {total} unit(s) of {suite.name} on {where} that are not yet in "
                                         "the cache (a few seconds each; cached after the first time)",
                                         soft_wrap=True)

            est = estimate_suite(suite, args.runs_dir, device=args.device, data_root=args.data_root,
                                 eval_batch_size=args.eval_batch_size, progress=progress,
                                 retry_failed=args.retry_failed)
        where = f"{est.device} ({est.device_name})" if est.device_name else est.device
        title = f"suite {suite.name}: estimated device-hours on {escape(where)}"
    priced = absent is None
    caption = ("passes: images through the model and back, in forward-equivalents (forward + 2 × backward), "
               "device-independent")
    hours = ["training h", "evaluation h", "total h"] if priced else []
    table = Table("dataset", "backbone", "regularizer", "jobs left", "training passes", "evaluation passes",
                  *(hours or ["total passes"]), title=title, caption=caption)
    for r in [*est.rows, *est.auxiliary]:
        jobs = f"{r.jobs_left}/{r.jobs}" if r.jobs else "once"
        table.add_row(escape(r.dataset), escape(r.backbone), escape(r.regularizer), jobs,
                      _passes(r.train_passes), _passes(r.eval_passes),
                      *([_hours(r.train_seconds), _hours(r.eval_seconds), _hours(r.seconds)] if priced
                        else [_passes(r.passes)]))
    table.add_section()
    total, train = est.passes, est.train_passes
    eval_total = total.forward_equivalents - train.forward_equivalents
    table.add_row("total", "", "", f"{est.jobs_left}/{est.jobs}", _passes(train), f"{eval_total:.4g}",
                  *([_hours(est.train_seconds), _hours(est.seconds - est.train_seconds), _hours(est.seconds)]
                    if priced else [_passes(total)]))
    _shared.stdout.print(table)
    if est.evaluators:
        per = Table("evaluator", "jobs left", "passes", *(["h"] if priced else []),
                    title="evaluation work per evaluator (auxiliary models above)")
        for e in est.evaluators:
            per.add_row(escape(e.evaluator), str(e.jobs_left), _passes(e.passes),
                        *([_hours(e.seconds)] if priced else []))
        _shared.stdout.print(per)
    failed = (f" ({est.failed} whose training failed before are not counted: a rerun reports them and trains them "
              "again only with --retry-failed)" if est.failed else "")
    work = (f"{est.jobs} job(s), {est.jobs_left} not yet complete in {args.runs_dir}{failed}: {total.forward:.4g} "
            f"forward and {total.backward:.4g} backward passes, {total.forward_equivalents:.4g} forward-equivalent")
    if absent is not None:
        _shared.stdout.print(f"{work}. Device-hours need the device ({absent.rstrip('.')}) or a stated throughput: "
                             "--throughput PASSES_PER_SECOND.", soft_wrap=True)
    elif throughput is not None:
        _shared.stdout.print(f"{work}; about {est.seconds / 3600:.3g} device-hours ({est.seconds / 60:.3g} min) at "
                             f"the stated {throughput:g} forward-equivalent passes per second (no calibration).",
                             soft_wrap=True)
    else:
        cal = est.calibration
        _shared.stdout.print(f"{work}; about {est.seconds / 3600:.3g} device-hours ({est.seconds / 60:.3g} min). "
                             f"Calibration: {cal.measured} unit(s) timed in {cal.measure_seconds:.0f} s, "
                             f"{cal.reused} from {cal.cache.path}.", soft_wrap=True)
        if cal.cache.problem:
            _shared.warn(f"calibration cache: {cal.cache.problem}")
    if est.not_estimated:
        _shared.warn(f"not estimated (these evaluators declare no cost hook, Evaluator.cost): "
                     f"{', '.join(est.not_estimated)}")
    if est.not_counted:
        _shared.warn("not counted in passes (plugin work that declares none, PluginWork.passes)"
                     + (", nor in the hours at a stated throughput" if throughput is not None else "")
                     + f": {', '.join(est.not_counted)}")
    return 0


def _hours(seconds: float) -> str:
    return f"{seconds / 3600:.4g}"


def _passes(passes) -> str:
    return f"{passes.forward_equivalents:.4g}"


def _print_dry_run(summary) -> int:
    suite = summary.suite
    table = Table("#", "job hash", "dataset", "backbone", "regularizer", "seed", "state", "preflight",
                  title=f"suite {suite.name}: {len(summary.jobs)} jobs")
    for i, report in enumerate(summary.jobs, 1):
        job = report.job
        state = {"invalid": "[red]invalid[/]", "failed": "[red]failed[/]"}.get(report.state, report.state)
        table.add_row(str(i), job.hash, escape(job.dataset.label), escape(job.backbone.label),
                      escape(job.regularizer.label), str(job.seed), state,
                      escape("\n".join(report.findings)) or "ok")
    _shared.stdout.print(table)
    _shared.stdout.print("evaluators: " + ", ".join(spec.label for spec in suite.evaluators))
    if summary.selection is not None:
        waiting = summary.selection.pending()
        _shared.stdout.print(f"selection: the sweep (seeds {list(suite.selection.seeds)}) is scored by "
                             "validation_accuracy only; then the strongest setting within "
                             f"{suite.selection.max_drop:g} of erm's validation accuracy is trained with seeds "
                             f"{list(suite.seeds)} and scored by the evaluators above. "
                             + (f"{len(waiting)} selection(s) wait for their sweep, so their scored jobs are not "
                                "listed yet." if waiting else ""), soft_wrap=True)
    invalid = summary.count("invalid")
    if invalid:
        _shared.stderr.print(f"[red]{invalid} job(s) would not run[/]; `gibench run` stops before training until they "
                             "are fixed.")
    return 1 if invalid else 0


def _build_local_site(runs_dir: Path, suite_name: str, frame) -> Path:
    """A leaderboard page of this run's results alone, at ``runs_dir/site/index.html`` (built aside, then renamed)."""
    from gibench.leaderboard.build import build_results_site
    from gibench.submissions.build import SubmissionMetadata, package_results

    metadata = SubmissionMetadata(name=f"local run of {runs_dir}", authors=["you"],
                                  description=f"Results under {runs_dir}, not submitted.", links=[])
    loaded = package_results(runs_dir, metadata, suite_name, results=frame,
                             job_hashes=set(frame["job_hash"]))
    return build_results_site([loaded], runs_dir / "site").resolve()

