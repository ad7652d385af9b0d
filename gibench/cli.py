"""The ``gibench`` command line.

    gibench list {regularizers,evaluators,datasets,backbones,suites} [--verbose]
    gibench run --suite NAME|PATH [--runs-dir DIR] [--data-root DIR] [--download] [--device cpu|cuda] [--dry-run]
                [--retry-failed] [--eval-batch-size N] [--executor local|ray] [--address ADDR] [--gpus-per-job F]
                [--check] [--estimate]
    gibench doctor [--runs-dir DIR] [--fix]
    gibench report [--runs-dir DIR] [--csv FILE] [--all-metrics] [--ranks] [--sanity]
    gibench submit --name NAME --author A [--author B] [--description TEXT] [--link URL] [--suite NAME] [--out DIR]
                   [--max-artifact-mb MB]
    gibench validate SUBMISSION_DIR
    gibench verify SUBMISSION_DIR [--jobs N] [--seed S] [--runs-dir DIR] [--tolerance T] [--device D] [--data-root DIR]
    gibench leaderboard build [--submissions DIR] [--out DIR] [--skip-invalid]
    gibench leaderboard serve [--out DIR] [--port N]

User errors (gibench.core.errors.GibenchError) print one message without a traceback and exit with status 2.
"""

from __future__ import annotations

import argparse
import errno
import sys
import textwrap
from pathlib import Path
from typing import TYPE_CHECKING

from rich.console import Console
from rich.markup import escape
from rich.table import Table

from gibench.core.errors import GibenchError

if TYPE_CHECKING:
    from gibench.api.registry import PluginInfo, Registry
    from gibench.core.params import ParamInfo

DEFAULT_RUNS_DIR = Path("runs")
_USER_FS_ERRORS = {errno.EACCES, errno.EPERM, errno.EROFS, errno.ENOTDIR, errno.EISDIR, errno.ENOSPC, errno.EEXIST}
# Outside a terminal (pipes, CI logs) rich would wrap at 80 columns and cut paths in two; use wide lines there.
stdout = Console(width=None if sys.stdout.isatty() else 200)
stderr = Console(stderr=True, width=None if sys.stderr.isatty() else 200)


def main(argv: list[str] | None = None) -> int:
    parser = _parser()
    args = parser.parse_args(argv)
    if not getattr(args, "handler", None):
        parser.print_help()
        return 2
    try:
        return args.handler(args) or 0
    except GibenchError as exc:
        stderr.print(f"[bold red]error:[/] {escape(str(exc))}")
        return 2
    except OSError as exc:  # the file system refused (permissions, read-only, full, a file where a folder should be)
        if exc.errno not in _USER_FS_ERRORS:
            raise
        where = f"{exc.filename}: " if exc.filename else ""
        stderr.print(f"[bold red]error:[/] {escape(where + (exc.strerror or str(exc)))}. Check that path (its "
                     "permissions, free space, whether it is a file or a folder) or pass another one.")
        return 2
    except KeyboardInterrupt:
        stderr.print("interrupted; finished jobs are kept and a rerun resumes from them.")
        return 130


def _parser() -> argparse.ArgumentParser:
    from gibench import __version__

    parser = argparse.ArgumentParser(prog="gibench", description="Benchmark gradient-interpretability regularizers.")
    parser.add_argument("--version", action="version", version=f"gibench {__version__}",
                        help="print gibench's version and exit")
    sub = parser.add_subparsers(title="commands")

    p = sub.add_parser("list", help="list installed plugins, backbones or shipped suites")
    p.add_argument("kind", choices=["regularizers", "evaluators", "datasets", "backbones", "suites"],
                   help="what to list")
    p.add_argument("--pattern", default=None, help="for backbones: a timm wildcard, e.g. 'resnet*'")
    p.add_argument("--verbose", "-v", action="store_true",
                   help="for plugins: also each one's description (the first paragraph of its docstring)")
    p.set_defaults(handler=cmd_list)

    p = sub.add_parser("run", help="train and evaluate every job of a suite (resumable)")
    p.add_argument("--suite", required=True, help="a shipped suite name (see `gibench list suites`) or a YAML path")
    p.add_argument("--runs-dir", type=Path, default=DEFAULT_RUNS_DIR, help="where models and results are stored")
    p.add_argument("--data-root", type=Path, default=None, help="dataset folder (default: ~/.cache/gibench/data)")
    p.add_argument("--download", action="store_true", help="allow downloading missing datasets")
    p.add_argument("--device", default=None, help="cpu or cuda (default: cuda when available)")
    p.add_argument("--dry-run", action="store_true", help="list the jobs and their hashes; train nothing")
    p.add_argument("--retry-failed", action="store_true", help="retrain jobs whose training failed before")
    p.add_argument("--eval-batch-size", type=int, default=256,
                   help="images per evaluation batch (stepped down automatically on out-of-memory)")
    p.add_argument("--executor", choices=["local", "ray"], default="local",
                   help="local: jobs one after another in this process; ray: jobs as Ray tasks "
                        "(pip install 'gibench[ray]')")
    p.add_argument("--address", default=None,
                   help="with --executor ray: the Ray cluster address (default: $RAY_ADDRESS, else a cluster that "
                        "`ray start` runs on this machine, else a new local one)")
    p.add_argument("--gpus-per-job", type=float, default=None,
                   help="with --executor ray: GPUs per job, e.g. 0.25 packs four small jobs per GPU, 0 runs on CPUs "
                        "(default: 1 on a cluster with GPUs, 0 on a CPU-only one)")
    p.add_argument("--check", action="store_true", help="only scan --runs-dir for damage (as `gibench doctor`)")
    p.add_argument("--estimate", action="store_true",
                   help="print the jobs left and the estimated device-hours, from a short cached calibration on "
                        "--device; trains and downloads nothing")
    p.add_argument("--claim-timeout", type=float, default=120.0,
                   help="seconds without a heartbeat after which another host's claim on a job is taken over")
    p.set_defaults(handler=cmd_run)

    p = sub.add_parser("doctor", help="scan a runs directory for damaged, stale or orphaned files")
    p.add_argument("--runs-dir", type=Path, default=DEFAULT_RUNS_DIR, help="the runs directory to scan")
    p.add_argument("--fix", action="store_true",
                   help="move damaged and stale files into runs_dir/quarantine/ (never deletes results), delete "
                        "leftover temporaries and dead claims")
    p.set_defaults(handler=cmd_doctor)

    p = sub.add_parser("report", help="print the mean over seeds with its 95% interval and the change against erm")
    p.add_argument("--runs-dir", type=Path, default=DEFAULT_RUNS_DIR, help="the runs directory to read")
    p.add_argument("--csv", type=Path, default=None,
                   help="also write the per-metric summary (intervals, Δ intervals, ranks) as CSV")
    p.add_argument("--all-metrics", action="store_true", help="show every metric, not only the headlines")
    p.add_argument("--ranks", action="store_true",
                   help="also print each variant's rank per headline with the range its intervals allow, and the "
                        "evaluator agreement (Spearman's rho between headline metrics across variants)")
    p.add_argument("--sanity", action="store_true",
                   help="meta-evaluation: does every saliency evaluator rank the `fooled` control below erm?")
    p.set_defaults(handler=cmd_report)

    p = sub.add_parser("submit", help="package results as submissions/<id>/ for the leaderboard")
    p.add_argument("--runs-dir", type=Path, default=DEFAULT_RUNS_DIR, help="the runs directory to package")
    p.add_argument("--name", required=True, help="the method's name as the leaderboard shows it")
    p.add_argument("--author", action="append", required=True, dest="authors",
                   help="an author (repeat the option for several)")
    p.add_argument("--description", default="", help="a short description of the method (plain text)")
    p.add_argument("--link", action="append", default=[], dest="links",
                   help="an http(s) link, e.g. the paper or the code (repeat the option for several)")
    p.add_argument("--suite", default=None, help="only the jobs of runs of this suite name")
    p.add_argument("--out", type=Path, default=Path("submissions"), help="the folder that receives submissions/<id>/")
    p.add_argument("--max-artifact-mb", type=float, default=20.0, metavar="MB",
                   help="size limit of the packed images and curves in MB (default 20; 1 MB = 10^6 bytes). Over it, "
                        "the lowest seed of each row and curves before images are packed first and the rest is "
                        "recorded as left out")
    p.set_defaults(handler=cmd_submit)

    p = sub.add_parser("validate", help="check a submission folder against the schema")
    p.add_argument("path", type=Path, help="the submission folder, e.g. submissions/<id>")
    p.set_defaults(handler=cmd_validate)

    p = sub.add_parser("verify", help="re-train and re-evaluate a random sample of a submission's jobs and compare")
    p.add_argument("path", type=Path, help="the submission folder, e.g. submissions/<id>")
    p.add_argument("--jobs", type=int, default=1, help="how many of its jobs to re-run (default 1)")
    p.add_argument("--seed", type=int, default=0, help="seed of the random choice of jobs (default 0)")
    p.add_argument("--runs-dir", type=Path, default=None,
                   help="a new or empty scratch folder to re-run in, kept afterwards (default: a temporary folder, "
                        "deleted); never one of your runs folders")
    p.add_argument("--tolerance", type=float, default=1e-6,
                   help="largest absolute difference per metric that still agrees (default 1e-6: CPU runs with the "
                        "same library versions and thread count are bit-identical; use e.g. 0.02 across devices)")
    p.add_argument("--device", default="cpu", help="device to re-train on (default cpu, the deterministic one)")
    p.add_argument("--data-root", type=Path, default=None, help="where datasets other than the bundled ones live")
    p.set_defaults(handler=cmd_verify)

    p = sub.add_parser("leaderboard", help="build or serve the static leaderboard site")
    lsub = p.add_subparsers(title="leaderboard commands")
    b = lsub.add_parser("build", help="render submissions/ into a static site")
    b.add_argument("--submissions", type=Path, default=Path("submissions"), help="the folder of submissions to render")
    b.add_argument("--out", type=Path, default=Path("site"), help="where the static site is written")
    b.add_argument("--skip-invalid", action="store_true",
                   help="build from the valid submissions and list the invalid ones, with their errors, on the index "
                        "page (default: refuse to build while any submission is invalid)")
    b.set_defaults(handler=cmd_leaderboard_build)
    s = lsub.add_parser("serve", help="serve the built site on localhost")
    s.add_argument("--out", type=Path, default=Path("site"), help="the built site to serve")
    s.add_argument("--port", type=int, default=8000, help="the port on 127.0.0.1")
    s.set_defaults(handler=cmd_leaderboard_serve)
    return parser


# ----------------------------------------------------------------------------------------------------------------------


def cmd_list(args: argparse.Namespace) -> int:
    if args.kind == "suites":
        return _list_suites()
    if args.kind == "backbones":
        return _list_backbones(args.pattern)
    from gibench.api import registry

    reg = getattr(registry, args.kind)
    infos = reg.infos()
    stdout.print(f"[bold]{args.kind}[/] (entry points {reg.group}): {len(infos)} installed")
    for info in infos:
        _print_plugin(reg, info, args.verbose)
    return 1 if any(info.error is not None for info in infos) else 0


def _print_plugin(reg: Registry, info: PluginInfo, verbose: bool) -> None:
    """One plugin: a line with name, distribution, version and status, then its parameters (or why it failed)."""
    dists = " + ".join(s.distribution for s in info.sources)
    status = "[green]ok[/]" if info.error is None else "[red]error[/]"
    stdout.print(f"\n[bold cyan]{escape(info.name)}[/]  {escape(dists)} {escape(info.version)}  {status}")
    if info.error is not None:
        for line in info.error.strip().splitlines():  # a traceback: kept as it is, not re-wrapped
            stdout.print(f"  {escape(line)}", soft_wrap=True, highlight=False)
        return
    cls = reg.get(info.name)
    if verbose and (summary := plugin_summary(cls)):
        _print_wrapped(summary, indent=2, hanging=2)
    from gibench.core.params import describe_config

    try:
        params = describe_config(cls.Config)
    except Exception as exc:  # e.g. an annotation naming a type its module does not import
        stdout.print(f"  [red]its Config's parameters cannot be read[/]: {escape(type(exc).__name__)}: "
                     f"{escape(str(exc))}", highlight=False)
        return
    if not params:
        stdout.print("  (no parameters)")
    for param in params:
        allowed = f"  allowed: {param.range}" if param.range else ""
        _print_wrapped(f"{param.name}: {param.type} = {default_text(param)}{allowed}", indent=2, hanging=4,
                       bold=param.name)
        if param.help:
            _print_wrapped(param.help, indent=6, hanging=6)


def _print_wrapped(text: str, indent: int, hanging: int, bold: str = "") -> None:
    """``text`` wrapped at the console's width with ``indent`` spaces (``hanging`` on continuation lines);
    ``bold`` is a prefix of the first line to emphasize."""
    lines = textwrap.wrap(text, width=max(stdout.width, 40), initial_indent=" " * indent,
                          subsequent_indent=" " * hanging, break_on_hyphens=False)
    for i, line in enumerate(lines):
        if i == 0 and bold and line[indent:].startswith(bold):
            markup = f"{line[:indent]}[bold]{escape(bold)}[/]{escape(line[indent + len(bold):])}"
        else:
            markup = escape(line)
        stdout.print(markup, soft_wrap=True, highlight=False)


def default_text(param: ParamInfo) -> str:
    """A parameter's default as the user would write it; long sequences shortened."""
    if param.required:
        return "(required)"
    value = param.default
    if isinstance(value, (tuple, list)):
        items = [_scalar_text(v) for v in value]
        shown = items if len(items) <= 4 else [*items[:3], f"… {len(items)} values"]
        return f"({', '.join(shown)})" if isinstance(value, tuple) else f"[{', '.join(shown)}]"
    return _scalar_text(value)


def _scalar_text(value: object) -> str:
    if isinstance(value, float):
        return repr(value) if len(repr(value)) <= 8 else f"{value:g}"
    if isinstance(value, str):
        return repr(value)
    return str(value)


def plugin_summary(cls: type) -> str:
    """The first paragraph of a plugin class's own docstring (else its module's), on one line; '' if neither."""
    import inspect

    doc = cls.__dict__.get("__doc__") or getattr(sys.modules.get(cls.__module__), "__doc__", None) or ""
    first = inspect.cleandoc(doc).split("\n\n", 1)[0]
    return " ".join(first.split())


def _list_suites() -> int:
    from gibench.suites.suite import load_suite, shipped_suites

    table = Table("name", "jobs", "description", title="shipped suites")
    from gibench.suites.jobs import expand

    for name in shipped_suites():
        suite = load_suite(name)
        table.add_row(name, str(len(expand(suite))), suite.description)
    stdout.print(table)
    return 0


def _list_backbones(pattern: str | None) -> int:
    import timm

    from gibench.training.models import in_tree_backbones

    stdout.print("gibench's own, registered with timm (small CPU nets and the seed papers' CIFAR ResNet-18 / VGG-11): "
                 + ", ".join(in_tree_backbones()))
    if pattern:
        stdout.print(f"timm models matching {pattern!r}: " + ", ".join(timm.list_models(pattern)))
    else:
        stdout.print(f"and any of timm's {len(timm.list_models())} models by name "
                     "(`gibench list backbones --pattern 'resnet*'` to search); weights are never downloaded.")
    return 0


def cmd_doctor(args: argparse.Namespace) -> int:
    from gibench.store.doctor import doctor

    problems = doctor(args.runs_dir, fix=args.fix)
    if not problems:
        stdout.print(f"{args.runs_dir}: no damaged, stale or orphaned files.")
        return 0
    table = Table("kind", "path", "problem", *(["fixed"] if args.fix else []), title=f"doctor: {args.runs_dir}")
    for column in table.columns[1:]:
        column.overflow = "fold"  # paths are shown whole, folded over lines, never cut
    colours = {"damaged": "red", "stale": "yellow", "orphaned": "magenta", "info": "cyan"}
    for p in problems:
        table.add_row(f"[{colours[p.kind]}]{p.kind}[/]", escape(str(p.path)), escape(p.what),
                      *([escape(p.fixed) or "-"] if args.fix else []))
    stdout.print(table)
    unfixed = [p for p in problems if p.kind in ("damaged", "stale") and not p.fixed]
    if unfixed and not args.fix:
        stdout.print(f"{len(unfixed)} damaged or stale file(s); `gibench doctor --runs-dir {args.runs_dir} --fix` "
                     "moves them aside (into quarantine/) so that the next run recomputes them.", soft_wrap=True)
    return 1 if unfixed else 0


def cmd_run(args: argparse.Namespace) -> int:
    if args.check:
        args.fix = False
        return cmd_doctor(args)
    if args.estimate:
        return _print_estimate(args)
    from gibench.results.tables import collect_results, evaluations_of
    from gibench.running.progress import RichProgress
    from gibench.running.runner import RunOptions, run_suite
    from gibench.suites.suite import load_suite

    options = RunOptions(data_root=args.data_root, download=args.download, device=args.device,
                         retry_failed=args.retry_failed, eval_batch_size=args.eval_batch_size,
                         claim_timeout_s=args.claim_timeout)
    executor_options = _executor_options(args)
    suite = load_suite(args.suite)
    with RichProgress(stderr) as display:
        summary = run_suite(suite, args.runs_dir, options, observer=display, executor=args.executor,
                            executor_options=executor_options, dry_run=args.dry_run)
    if args.dry_run:
        return _print_dry_run(summary)
    frame = collect_results(args.runs_dir, {r.job.hash for r in summary.jobs}, warn=_warn,
                            evaluations=evaluations_of(suite))
    if not frame.empty:
        _print_frame(frame, all_metrics=False)
        site = _build_local_site(args.runs_dir, suite.name, frame)
        stdout.print(f"leaderboard page: {site}", soft_wrap=True)
    failures = summary.failures()
    if failures:
        stderr.print(f"[red]{len(failures)} failure(s)[/] ({summary.count('failed')} of {len(summary.jobs)} job(s) "
                     "failed to train; the others finished):")
    for line in failures:
        stderr.print(f"[red]failed:[/] {escape(line)}")
    return 1 if failures else 0


def _executor_options(args: argparse.Namespace) -> dict:
    if args.executor == "local":
        if args.address is not None or args.gpus_per_job is not None:
            raise GibenchError("--address and --gpus-per-job apply to --executor ray only.")
        return {}
    options = {}
    if args.address is not None:
        options["address"] = args.address
    if args.gpus_per_job is not None:
        if not args.gpus_per_job >= 0:
            raise GibenchError(f"--gpus-per-job must be 0 (CPU tasks) or a positive number (e.g. 0.25 or 1), "
                               f"got {args.gpus_per_job}.")
        options["gpus_per_job"] = args.gpus_per_job
    return options


def _print_estimate(args: argparse.Namespace) -> int:
    from gibench.running.estimate import estimate_suite
    from gibench.suites.suite import load_suite

    suite = load_suite(args.suite)
    with stderr.status(f"calibrating {suite.name} on {args.device or 'the default device'} (cached after the first "
                       "time)"):
        est = estimate_suite(suite, args.runs_dir, device=args.device, data_root=args.data_root,
                             eval_batch_size=args.eval_batch_size)
    where = f"{est.device} ({est.device_name})" if est.device_name else est.device
    table = Table("dataset", "backbone", "regularizer", "jobs left", "training h", "evaluation h", "total h",
                  title=f"suite {suite.name}: estimated device-hours on {escape(where)}")
    for r in [*est.rows, *est.auxiliary]:
        jobs = f"{r.jobs_left}/{r.jobs}" if r.jobs else "once"
        table.add_row(escape(r.dataset), escape(r.backbone), escape(r.regularizer), jobs, _hours(r.train_seconds),
                      _hours(r.eval_seconds), _hours(r.seconds))
    table.add_section()
    table.add_row("total", "", "", f"{est.jobs_left}/{est.jobs}", _hours(est.train_seconds),
                  _hours(est.seconds - est.train_seconds), _hours(est.seconds))
    stdout.print(table)
    cal = est.calibration
    stdout.print(f"{est.jobs} job(s), {est.jobs_left} not yet complete in {args.runs_dir}: about "
                 f"{est.seconds / 3600:.3g} device-hours ({est.seconds / 60:.3g} min). Calibration: {cal.measured} "
                 f"unit(s) timed in {cal.measure_seconds:.0f} s, {cal.reused} from {cal.cache.path}.", soft_wrap=True)
    if cal.cache.problem:
        _warn(f"calibration cache: {cal.cache.problem}")
    if est.not_estimated:
        _warn(f"not estimated (no cost rule for these plugin evaluators): {', '.join(est.not_estimated)}")
    return 0


def _hours(seconds: float) -> str:
    return f"{seconds / 3600:.4g}"


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
    stdout.print(table)
    stdout.print("evaluators: " + ", ".join(spec.label for spec in suite.evaluators))
    invalid = summary.count("invalid")
    if invalid:
        stderr.print(f"[red]{invalid} job(s) would not run[/]; `gibench run` stops before training until they are "
                     "fixed.")
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


def cmd_report(args: argparse.Namespace) -> int:
    from gibench.results.tables import collect_results, summarize

    if args.sanity:
        return _print_sanity(args.runs_dir)
    frame = _print_report(args.runs_dir, None, all_metrics=args.all_metrics)
    if args.ranks and not frame.empty:
        _print_ranks(summarize(frame))
    if args.csv:
        summarize(collect_results(args.runs_dir, warn=lambda message: None)).to_csv(args.csv, index=False)
        stdout.print(f"wrote {args.csv}")
    return 0


def _warn(message: str) -> None:
    stderr.print(f"[yellow]warning:[/] {escape(message)}", soft_wrap=True)


def _print_report(runs_dir: Path, job_hashes: set[str] | None, all_metrics: bool):
    """Print the report of ``runs_dir`` (its results, then the jobs whose training failed); returns the frame."""
    from gibench.results.tables import TRAINING, collect_results, failed_jobs, mixed_versions

    frame = collect_results(runs_dir, job_hashes, warn=_warn)
    failed = failed_jobs(runs_dir, job_hashes, warn=lambda message: None)  # collect_results warned already
    if frame.empty and not failed:
        raise GibenchError(f"no results under {runs_dir}; run `gibench run --suite smoke --runs-dir {runs_dir}` first.")
    trained = frame[frame["evaluator"] != TRAINING]
    if not trained.empty:
        _print_frame(frame, all_metrics)
    for evaluator, versions in mixed_versions(frame).items():
        _warn(f"results of versions {', '.join(versions)} of {evaluator} are stored and counted together only within "
              f"their own version (one row per version, never averaged across versions). `gibench doctor --runs-dir "
              f"{runs_dir} --fix` moves those of other versions than the installed one aside")
    for job in failed:  # jobs whose training failed have no results: never let them silently vanish
        stdout.print(f"[red]failed[/]: {escape(job.label)} (job {job.hash}): training failed: {escape(job.reason)}",
                     soft_wrap=True)
    if trained.empty:
        stdout.print(f"every job under {runs_dir} failed to train (reasons above); fix the cause and rerun the suite "
                     "with --retry-failed.", soft_wrap=True)
    return frame


_INTERVALS = ("± is the half-width of the 95 % Student-t interval over seeds (none with one seed); Δ vs erm of the "
              "same table: paired t by seed when both rows have the same seeds, else Welch's t; green/red only where "
              "its interval excludes 0.")


def _print_frame(frame, all_metrics: bool) -> None:
    """One terminal table per dataset × backbone × training config: a row per variant and metric (headlines unless
    ``all_metrics``), the mean ± its 95 % interval, the seeds, Δ vs erm ± its interval. Fits 80 columns (cells wrap,
    never truncate)."""
    from gibench.results.tables import TRAINING, summarize

    stats = summarize(frame)
    stats = stats[(stats["headline"] | all_metrics) & (stats["evaluator"] != TRAINING)]  # failed trainings: own lines
    for _, table in stats.groupby(_TABLE, sort=True):
        stdout.print(_report_table(table))
    if len(stats):
        stdout.print(_INTERVALS)
    _print_auxiliary(frame)
    _print_not_ok(frame)


_TABLE = ["dataset", "backbone", "backbone_params", "train_hash", "train_label"]


def _table_title(row) -> str:
    from gibench.leaderboard.build import params_label

    title = f"{row.dataset} × {row.backbone}{params_label(row.backbone_params)}"
    if row.train_label:
        title += f" · {row.train_label} (train config {row.train_hash})"
    return escape(title)


def _report_table(table) -> Table:
    """A variant's name on its own line, then one line per metric (evaluations skipped on every seed are left out:
    they are listed once, with the reason, below the tables)."""
    from rich import box

    from gibench.results.tables import metric_label

    view = Table(title=_table_title(next(table.itertuples())), title_justify="left", box=box.SIMPLE_HEAD,
                 pad_edge=False)
    for name, justify in (("variant / metric", "left"), ("mean ± 95 %", "right"), ("n", "right"),
                          ("Δ vs erm ± 95 %", "right")):
        view.add_column(name, justify=justify, overflow="fold")
    table = table[~((table["n_ok"] == 0) & (table["statuses"] == "skipped"))]
    setting = table["evaluator_version"] + " " + table["evaluator_params"]
    table = table.assign(settings=setting.groupby([table["evaluator"], table["metric"]]).transform("nunique"),
                         _not_baseline=table["regularizer"] != "erm")
    for variant, rows in table.sort_values(["_not_baseline", "variant"], kind="stable").groupby("variant", sort=False):
        view.add_row(f"[bold]{escape(variant)}[/]")
        for r in rows.itertuples():
            label = metric_label(r.evaluator, r.metric, r.higher_is_better)
            if r.settings > 1:  # two versions or settings of one evaluator: say which row is which
                label += f" v{r.evaluator_version} {r.evaluator_params}"
            view.add_row("  " + escape(label), _mean_text(r), f"{r.n_ok}/{r.n_seeds}", _delta_text(r))
    return view


def _mean_text(r) -> str:
    if r.n_ok == 0:
        return escape(r.statuses or "—")
    if r.ci_low != r.ci_low:  # NaN: one seed, no interval
        return f"{r.mean:.4f}"
    return f"{r.mean:.4f} ± {(r.ci_high - r.ci_low) / 2:.4f}"


def _delta_text(r) -> str:
    if r.regularizer == "erm" or r.delta_vs_erm != r.delta_vs_erm:
        return ""
    text = f"{r.delta_vs_erm:+.4f}"
    if r.delta_low == r.delta_low:
        text += f" ± {(r.delta_high - r.delta_low) / 2:.4f}"
    colour = {"better": "green", "worse": "red"}.get(r.verdict)
    return f"[{colour}]{text}[/]" if colour else text


def _print_ranks(stats) -> None:
    """Per table: each variant's rank on each headline (1 = best) with the range its intervals allow; then the
    evaluator agreement (Spearman's ρ between headline metrics across the variants)."""
    from gibench.results.tables import agreement_table, metric_label

    heads = stats[stats["headline"] & (stats["n_ok"] > 0)]
    agreement = agreement_table(stats)
    for _, table in heads.groupby(_TABLE, sort=True):
        view = Table("metric", "variant", "rank", "possible ranks", title=f"ranks: {_table_title(table.iloc[0])}",
                     title_justify="left")
        for column in view.columns:
            column.overflow = "fold"
        for i, (_, rows) in enumerate(table.groupby(["evaluator", "evaluator_version", "evaluator_params", "metric"],
                                                    sort=False)):
            if i:
                view.add_section()
            for j, r in enumerate(rows.sort_values("rank", kind="stable").itertuples()):
                label = metric_label(r.evaluator, r.metric, r.higher_is_better) if j == 0 else ""
                possible = f"{r.rank_best}–{r.rank_worst}" if r.rank_best != r.rank_worst else str(r.rank)
                view.add_row(escape(label), escape(r.variant), str(r.rank), f"{possible} of {len(rows)}")
        stdout.print(view)
        mine = agreement.merge(table[_TABLE].drop_duplicates(), on=_TABLE)
        if len(mine):
            view = Table("metric", "metric", "Spearman ρ", "variants", title=f"evaluator agreement: "
                         f"{_table_title(table.iloc[0])}", title_justify="left")
            for column in view.columns:
                column.overflow = "fold"
            for r in mine.itertuples():
                view.add_row(escape(r.metric_a), escape(r.metric_b), "—" if r.rho != r.rho else f"{r.rho:+.2f}",
                             str(r.n_variants))
            stdout.print(view)
    stdout.print("possible ranks: 1 + the variants whose 95 % interval lies entirely better, to n − those entirely "
                 "worse (a variant with one seed has no interval and may hold any rank). ρ: metrics turned so that "
                 "higher is better; — with fewer than 3 variants.")


def _print_auxiliary(frame) -> None:
    """The auxiliary models (judges, denoisers, retrained models) behind the numbers above, with their quality."""
    from gibench.results.tables import auxiliary_table

    aux = auxiliary_table(frame)
    if aux.empty:
        return
    table = Table("dataset", "evaluator", "auxiliary model", "models", "jobs", "its quality",
                  title="auxiliary models the numbers above depend on")
    for column in table.columns:
        column.overflow = "fold"
    for r in aux.itertuples():
        table.add_row(escape(r.dataset), escape(r.evaluator), escape(r.kind), str(r.models), str(r.jobs),
                      escape(r.quality))
    stdout.print(table)


def _print_not_ok(frame) -> None:
    """One line per (status, evaluator) with the datasets and the recorded reasons: skipped evaluations are expected
    (a dataset lacks a capability), failed ones are not; both are listed so that no result silently disappears."""
    from gibench.results.tables import TRAINING

    problems = frame[(frame["status"] != "ok") & (frame["evaluator"] != TRAINING)]  # failed trainings: own lines
    problems = problems.drop_duplicates(["job_hash", "evaluator"])
    for (status, evaluator), group in problems.groupby(["status", "evaluator"], sort=True):
        where = ", ".join(sorted(set(group["dataset"])))
        reasons = sorted({r for r in group.get("reason", []) if r})
        colour = "yellow" if status == "skipped" else "red"
        why = "; ".join(reasons) if reasons else ("the dataset lacks a capability it requires" if status == "skipped"
                                                   else "no reason recorded")
        stdout.print(f"[{colour}]{status}[/]: {escape(evaluator)} on {len(group)} job(s) ({escape(where)}): "
                     f"{escape(why)}" + ("" if status == "skipped" else "; see the result files under the runs "
                                         "directory"))


def _print_sanity(runs_dir: Path) -> int:
    from gibench.leaderboard.build import params_label
    from gibench.results.tables import collect_results, metric_label, sanity_table

    table = sanity_table(collect_results(runs_dir))
    if table.empty:
        raise GibenchError(
            f"no `fooled` and `erm` results on the same dataset, backbone and training config under {runs_dir}; add "
            "both regularizers to a suite (the `standard` suite has them) and run it."
        )
    view = Table("dataset × backbone", "control", "evaluator: metric", "erm", "fooled", "verdict",
                 title="sanity: the fooled control must score worse than erm on every saliency evaluator")
    for column in view.columns:
        column.overflow = "fold"
    for r in table.itertuples():
        verdict = "[green]ok[/]" if r.passes else "[red]FAILS: evaluator does not see the fooling[/]"
        if r.passes and r.verdict != "worse":
            verdict += " (within seed noise)" if r.delta_low == r.delta_low else " (one seed: no interval)"
        where = f"{r.dataset} × {r.backbone}{params_label(r.backbone_params)}"
        view.add_row(escape(where + (f" · {r.train_label}" if r.train_label else "")), escape(r.variant),
                     escape(metric_label(r.evaluator, r.metric, r.higher_is_better)), f"{r.erm:.4f}", f"{r.fooled:.4f}",
                     verdict)
    stdout.print(view)
    return 0 if table["passes"].all() else 1


def cmd_submit(args: argparse.Namespace) -> int:
    from gibench.submissions.build import build_submission, load_submission

    # a mapping, so that a blank --name or a javascript: --link is a SubmissionError naming the option's field
    metadata = {"name": args.name, "authors": args.authors, "description": args.description, "links": args.links}
    path = build_submission(args.runs_dir, args.out, metadata, suite_name=args.suite, warn=_warn,
                            max_artifact_mb=args.max_artifact_mb)
    record = load_submission(path).submission.artifacts
    stdout.print(f"wrote submission {path}")
    if record is not None:
        stdout.print(f"artifacts: {len(record.files)} file(s), {record.total_bytes / 1e6:.3g} MB of the "
                     f"{record.limit_bytes / 1e6:g} MB limit" + (f"; {len(record.left_out)} left out (listed under "
                                                                 "'artifacts.left_out' in submission.json)"
                                                                 if record.left_out else ""))
    return 0


def cmd_validate(args: argparse.Namespace) -> int:
    from gibench.submissions.build import load_submission
    from gibench.submissions.verify import verification_status

    loaded = load_submission(args.path)
    submission, record = loaded.submission, loaded.submission.artifacts
    stdout.print(f"{args.path}: valid submission {submission.id!r}", soft_wrap=True)
    stdout.print(f"{len(loaded.results)} result rows, every value within its metric's declared range"
                 + (f"; {len(record.files)} artifact(s), {record.total_bytes / 1e6:.3g} MB, SHA-256 checked"
                    if record is not None else ""))
    status = verification_status(loaded)
    stdout.print(escape(f"verification: {status.state}" + (f" on {status.date} (tolerance {status.tolerance:g})"
                                                           if status.date else "")
                        + (f"; {status.detail}" if status.detail else "")), soft_wrap=True)
    return 0


def cmd_verify(args: argparse.Namespace) -> int:
    from gibench.submissions.build import load_submission
    from gibench.submissions.verify import VERIFICATION_FILE, verify_submission

    loaded = load_submission(args.path)
    result = verify_submission(loaded, jobs=args.jobs, seed=args.seed, tolerance=args.tolerance,
                               runs_dir=args.runs_dir, device=args.device, data_root=args.data_root, warn=_warn)
    for job in result.jobs:
        stdout.print(escape(f"job {job['job_hash']} {job['label']}: {job['state']}"
                            + (f" ({job['reason']})" if job.get("reason") else "")), soft_wrap=True)
    view = Table(title=f"verify {loaded.submission.id}: tolerance {result.tolerance:g} (absolute)")
    for column in ("evaluator", "metric", "rows", "max |Δ|", "outcome"):
        view.add_column(column)
    colours = {"agrees": "green", "disagrees": "red", "stale": "yellow"}
    for m in result.metrics:
        diff = "-" if m.max_abs_diff is None else f"{m.max_abs_diff:.3g}"
        view.add_row(escape(f"{m.evaluator} v{m.evaluator_version}"), escape(m.metric), str(m.rows), diff,
                     f"[{colours[m.outcome]}]{m.outcome}[/]")
    stdout.print(view)
    if result.environment_changes:
        stdout.print(escape("environment differs from the submission's runs (expect small differences; raise "
                            "--tolerance): " + ", ".join(f"{k} {a} → {b}" for k, (a, b) in
                                                        sorted(result.environment_changes.items()))),
                     soft_wrap=True)
    stdout.print(f"{result.status}: {len(result.jobs)} job(s) re-run; record written to "
                 f"{args.path / VERIFICATION_FILE}", soft_wrap=True)
    return 0 if result.status == "verified" else 1


def cmd_leaderboard_build(args: argparse.Namespace) -> int:
    from gibench.leaderboard.build import build_site

    index = build_site(args.submissions, args.out, skip_invalid=args.skip_invalid)
    stdout.print(f"leaderboard page: {index.resolve()}", soft_wrap=True)
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
        stdout.print(f"serving {args.out} at http://127.0.0.1:{args.port}/ (Ctrl-C to stop)")
        server.serve_forever()
    return 0


if __name__ == "__main__":
    sys.exit(main())
