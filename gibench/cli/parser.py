"""The ``gibench`` argument parser: every command's options and help, each subcommand's ``handler`` the function of
its command module (``gibench.cli.run.cmd_run`` and so on)."""

from __future__ import annotations

import argparse
from pathlib import Path

from gibench.cli.doctor import cmd_doctor
from gibench.cli.export import cmd_export
from gibench.cli.leaderboard import cmd_leaderboard_build, cmd_leaderboard_serve
from gibench.cli.list_plugins import cmd_list
from gibench.cli.load import cmd_load
from gibench.cli.report import cmd_report
from gibench.cli.run import cmd_run
from gibench.cli.submit import cmd_submit
from gibench.cli.validate import cmd_validate
from gibench.cli.verify import cmd_verify
from gibench.running.options import EXECUTORS, ISOLATION_ENV, ISOLATIONS

__all__ = ["DEFAULT_RUNS_DIR", "_parser"]

DEFAULT_RUNS_DIR = Path("runs")


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

    # `gibench run`'s options are run_suite's (gibench.running.runner) with the same names (each dest is the name
    # of a run_suite argument or RunOptions field), defaults and validation (RunOptions, check_executor_options);
    # tests/test_cli_library_agree.py holds them to it. The exceptions concern the terminal only: --suite and
    # --runs-dir are text turned into a Suite and a folder relative to the working directory; --check and --estimate
    # run another command instead of a run.
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
    # No argparse `choices`: check_executor_options rejects an unknown executor with the message run_suite gives.
    p.add_argument("--executor", default="local", metavar="{" + ",".join(EXECUTORS) + "}",
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
                   help="print the jobs left, their work in model passes and the estimated device-hours, from a "
                        "short cached calibration on --device (passes only where that device is absent); trains and "
                        "downloads nothing")
    p.add_argument("--throughput", type=float, default=None, metavar="PASSES_PER_SECOND",
                   help="with --estimate: price the passes at this many forward-equivalent passes per second (images "
                        "through the model per second, a backward counting as 2) instead of calibrating; needs no "
                        "device")
    p.add_argument("--claim-timeout", type=float, default=120.0, dest="claim_timeout_s", metavar="CLAIM_TIMEOUT",
                   help="seconds without a heartbeat after which another host's claim on a job is taken over")
    # No argparse `choices`: RunOptions rejects an unknown mode with the message run_suite gives.
    p.add_argument("--isolation", default=None, metavar="{" + ",".join(ISOLATIONS) + "}",
                   help="with --executor local: process runs each job in a supervised worker process (a job that "
                        "crashes or hangs fails alone), none in this process (for a debugger in a plugin; no time "
                        f"limits). Default: ${ISOLATION_ENV} when set, else process")
    p.add_argument("--job-timeout", type=float, default=None, dest="job_timeout_s", metavar="SECONDS",
                   help="stop a job that runs longer and record it as timed out (default: the suite's "
                        "limits.job_timeout_s, else no limit); needs --isolation process")
    p.add_argument("--eval-timeout", type=float, default=None, dest="eval_timeout_s", metavar="SECONDS",
                   help="stop an evaluation that runs longer and record it as timed out (default: the suite's "
                        "limits.eval_timeout_s, else no limit); needs --isolation process")
    p.add_argument("--workers", type=int, default=1, metavar="N",
                   help="with --executor local: N worker processes on this machine share the suite through the runs "
                        "directory (each job trains once); this one shows the progress, the others write to "
                        "RUNS_DIR/logs/worker-<i>.log. Each gets cores/N threads and, with several GPUs, one GPU, "
                        "unless OMP_NUM_THREADS or CUDA_VISIBLE_DEVICES is set (default 1)")
    p.set_defaults(handler=cmd_run)

    p = sub.add_parser("doctor", help="scan a runs directory for damaged, stale or orphaned files")
    p.add_argument("--runs-dir", type=Path, default=DEFAULT_RUNS_DIR, help="the runs directory to scan")
    p.add_argument("--fix", action="store_true",
                   help="move damaged and stale files into runs_dir/quarantine/ (never deletes results), delete "
                        "leftover temporaries and dead claims")
    p.set_defaults(handler=cmd_doctor)

    p = sub.add_parser("report", help="print the mean over seeds with its 95%% interval and the change against erm")
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
    p.add_argument("--suite", default=None,
                   help="only the jobs of runs of this suite: its name, or its file as `gibench run --suite` takes it")
    p.add_argument("--out", type=Path, default=Path("submissions"), help="the folder that receives submissions/<id>/")
    p.add_argument("--max-artifact-mb", type=float, default=20.0, metavar="MB",
                   help="size limit of the packed images and curves in MB (default 20; 1 MB = 10^6 bytes). Over it, "
                        "the lowest seed of each row and curves before images are packed first and the rest is "
                        "recorded as left out")
    p.add_argument("--models", type=Path, default=None, metavar="DIR",
                   help="reference the trained models in models.json: the folder `gibench export` wrote from the "
                        "runs directory (with --models-url; the weights are never copied into the submission)")
    p.add_argument("--models-url", default=None, metavar="PREFIX",
                   help="where the --models folder's content is published: https://host/path (each model is "
                        "PREFIX/<job hash>/model.safetensors), or file:///absolute/path, or file:relative/path "
                        "(resolved against the submission folder, e.g. file:../../release/models)")
    p.set_defaults(handler=cmd_submit)

    p = sub.add_parser("validate", help="check a submission folder against the schema")
    p.add_argument("path", type=Path, help="the submission folder, e.g. submissions/<id>")
    p.set_defaults(handler=cmd_validate)

    p = sub.add_parser("verify", help="re-train and re-evaluate a random sample of a submission's jobs and compare "
                                      "(--reevaluate: load its submitted models instead of re-training)")
    p.add_argument("path", type=Path, help="the submission folder, e.g. submissions/<id>")
    p.add_argument("--jobs", type=int, default=1, help="how many of its jobs to re-run (default 1)")
    p.add_argument("--seed", type=int, default=0, help="seed of the random choice of jobs (default 0)")
    p.add_argument("--runs-dir", type=Path, default=None,
                   help="a new or empty scratch folder to re-run in, kept afterwards (default: a temporary folder, "
                        "deleted); never one of your runs folders")
    p.add_argument("--tolerance", type=float, default=1e-6,
                   help="largest absolute difference per metric that still agrees (default 1e-6: CPU runs with the "
                        "same library versions and thread count are bit-identical; use e.g. 0.02 across devices)")
    p.add_argument("--device", default="cpu",
                   help="device to re-train (or re-evaluate) on (default cpu, the deterministic one)")
    p.add_argument("--data-root", type=Path, default=None, help="where datasets other than the bundled ones live")
    p.add_argument("--reevaluate", action="store_true",
                   help="the cheap check: load the submitted models of the sample (models.json; each checked against "
                        "its SHA-256) and re-run their evaluations, instead of re-training them")
    p.add_argument("--download", action="store_true",
                   help="with --reevaluate: allow fetching models not in the cache (~/.cache/gibench/models) yet")
    p.add_argument("--cache-dir", type=Path, default=None,
                   help="with --reevaluate: the download cache (default ~/.cache/gibench/models)")
    p.set_defaults(handler=cmd_verify)

    p = sub.add_parser("export", help="pack trained models (safetensors weights, a model card each) into a folder")
    p.add_argument("--runs-dir", type=Path, default=DEFAULT_RUNS_DIR, help="the runs directory to export from")
    p.add_argument("--out", type=Path, required=True, help="the folder to create (refused if it exists and is not "
                                                           "empty, unless --overwrite)")
    _model_selection(p, many=True)
    p.add_argument("--overwrite", action="store_true", help="replace an existing --out folder")
    p.add_argument("--data-root", type=Path, default=None,
                   help="dataset folder, for a dataset whose image shape is known only by loading it")
    p.set_defaults(handler=cmd_export)

    p = sub.add_parser("load", help="load one trained model by name, check every file, and print its card")
    p.add_argument("source", help="a runs directory, an exported folder, a submission, a .safetensors file, or an "
                                  "https://, http:// or file:// URL of a weights file or a models.json")
    _model_selection(p, many=False)
    p.add_argument("--sha256", default=None, help="the SHA-256 of the file a URL names (required for a URL)")
    p.add_argument("--download", action="store_true",
                   help="allow fetching a URL that is not in the cache (~/.cache/gibench/models) yet")
    p.add_argument("--cache-dir", type=Path, default=None, help="the download cache (default ~/.cache/gibench/models)")
    p.add_argument("--device", default="cpu", help="where to load the model (default cpu)")
    p.add_argument("--data-root", type=Path, default=None,
                   help="dataset folder, for a runs directory whose dataset's shape is known only by loading it")
    p.add_argument("--json", action="store_true", help="print the card as JSON instead of Markdown")
    p.set_defaults(handler=cmd_load)

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


def _model_selection(p: argparse.ArgumentParser, many: bool) -> None:
    """The options that name models (gibench.submissions.model_cards.Selection); repeatable for ``export``."""
    action, more = ("append", "; repeat for several") if many else ("store", "")
    p.add_argument("--dataset", action=action, help=f"dataset name (any options) or label, e.g. blockmnist{more}")
    p.add_argument("--backbone", action=action,
                   help=f"backbone name (any options) or label, e.g. 'gibench_cnn(act=softplus)'{more}")
    p.add_argument("--regularizer", action=action,
                   help=f"regularizer name (any options) or label, e.g. 'gradient_norm(weight=1e-3)'{more}")
    p.add_argument("--seed", action=action, type=int, help=f"training seed{more}")
    p.add_argument("--job", action=action, help=f"job hash, or a prefix of at least 4 hex digits{more}")
    p.add_argument("--train", action=action,
                   help=f"training config: its label as `gibench report` prints it, or its train hash{more}")

