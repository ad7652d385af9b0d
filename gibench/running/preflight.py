"""Preflight: everything about a run that can be checked cheaply, checked before the first job trains.

What is checked (all problems are collected and reported together, never one traceback at a time):

* the runs directory: not a file, writable (a real probe file is created and removed, so permissions, read-only
  mounts and full disks all show; skipped for a dry run, which writes nothing);
* the device (``cuda`` requested without a CUDA device) and the executor (Ray installed for ``--executor ray``);
* every dataset loads; loaded datasets stay in the per-process cache, so the run does not load them twice. Datasets
  whose files are missing (without ``--download``) are **one** finding that lists each of them with the folder where
  its files are expected and gives the exact command that fetches them all (``gibench run --suite ... --download``
  with the other options of this run); nothing is downloaded without ``--download``;
* every backbone with its options builds on every dataset of the suite, with that dataset's channels and classes,
  and runs one forward pass in train mode on two real training images of that dataset's shape (on the CPU). This
  catches options timm rejects (``resnet18`` with ``drop_rate: -3``) and architectures that do not fit the input
  (``vit_tiny_patch16_224`` on 28×28 digits);
* every regularizer and evaluator constructs with its options;
* evaluator × dataset capability mismatches are **warnings**: those evaluations would be recorded as skipped;
* a regularizer that trains on annotations (``Regularizer.requires``, e.g. ``rrr``'s irrelevant-region mask) on a
  dataset without them is an **error** that names the installed datasets that have them.

Findings name the jobs they concern (by hash), so ``gibench run --dry-run`` shows them per job.
"""

from __future__ import annotations

__all__ = [
    "Finding", "PreflightError", "PreflightReport", "datasets_with", "is_error", "preflight",
]

import dataclasses
import os
import shlex
import tempfile
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch

from gibench.api import registry
from gibench.api.plugin import VALIDATION_SPLIT
from gibench.core.errors import ConfigError, DataError, GibenchError
from gibench.running.options import RunOptions, check_device, load_bundle, resolve_device
from gibench.suites.suite import PluginSpec, Suite

if TYPE_CHECKING:
    from gibench.suites.jobs import Job


class PreflightError(ConfigError):
    """The preflight found problems; the message lists all of them."""


@dataclass(frozen=True)
class Finding:
    level: str  # "error" | "warning"
    message: str
    jobs: tuple[str, ...] = ()  # hashes of the jobs it concerns; () = the whole run

    def __str__(self) -> str:
        return f"{self.level}: {self.message}"


def is_error(text: str) -> bool:
    return text.startswith("error: ")


@dataclass
class PreflightReport:
    findings: list[Finding] = field(default_factory=list)
    all_jobs: tuple[str, ...] = ()

    @property
    def errors(self) -> list[Finding]:
        return [f for f in self.findings if f.level == "error"]

    @property
    def warnings(self) -> list[str]:
        return [f.message for f in self.findings if f.level == "warning"]

    def per_job(self) -> dict[str, list[str]]:
        out: dict[str, list[str]] = {}
        for finding in self.findings:
            for job_hash in finding.jobs or self.all_jobs:
                out.setdefault(job_hash, []).append(str(finding))
        return out

    def raise_errors(self) -> None:
        if self.errors:
            lines = "\n".join(f"  - {f.message}" for f in self.errors)
            raise PreflightError(f"the preflight found {len(self.errors)} problem(s); nothing was trained. "
                                 f"Fix them and run again (`--dry-run` shows them per job):\n{lines}")


def preflight(suite: Suite, jobs: list[Job], runs_dir: Path, options: RunOptions, *, executor: str = "local",
              writes: bool = True, ray_options: Mapping[str, Any] | None = None) -> PreflightReport:
    """Check the run of ``jobs`` into ``runs_dir``; see the module docstring."""
    report = PreflightReport(all_jobs=tuple(job.hash for job in jobs))
    add = report.findings.append
    for message in _runs_dir_problems(Path(runs_dir), writes):
        add(Finding("error", message))
    for message in _device_problems(options.device, executor):
        add(Finding("error", message))
    bundles, missing = _check_datasets(suite, jobs, options, add)
    if missing:
        add(_missing_datasets_finding(suite, jobs, missing, Path(runs_dir), options, executor, ray_options or {}))
    _check_backbones(suite, jobs, bundles, add)
    _check_plugins(jobs, add)
    _check_capabilities(suite, jobs, bundles, add)
    return report


def _runs_dir_problems(runs_dir: Path, writes: bool) -> list[str]:
    if runs_dir.exists() and not runs_dir.is_dir():
        return [f"--runs-dir {runs_dir} is a file, not a folder. Pass a folder (it is created if missing)."]
    if not writes:
        return []
    try:
        runs_dir.mkdir(parents=True, exist_ok=True)
        fd, probe = tempfile.mkstemp(prefix=".tmp-probe-", dir=runs_dir)
        os.close(fd)
        os.unlink(probe)
    except OSError as exc:
        return [f"--runs-dir {runs_dir} is not writable ({exc.strerror or exc}). Pass a folder you can write to, "
                "or fix its permissions."]
    return []


def _device_problems(device: str | None, executor: str) -> list[str]:
    problems = []
    try:
        if executor == "ray":  # the device is decided on each worker (a CPU-only head may drive GPU workers)
            check_device(device)
        else:
            resolve_device(device)
    except GibenchError as exc:
        problems.append(str(exc))
    if executor == "ray":
        try:
            import ray  # noqa: F401
        except ImportError:
            problems.append("--executor ray needs Ray: `pip install 'gibench[ray]'` (or use --executor local).")
    return problems


def _jobs_with(jobs: list[Job], **specs) -> tuple[str, ...]:
    return tuple(j.hash for j in jobs if all(getattr(j, k) == v for k, v in specs.items()))


def _check_datasets(suite: Suite, jobs: list[Job], options: RunOptions, add) -> tuple[dict, list[PluginSpec]]:
    """Load every dataset: the bundles, and the datasets whose files are missing (reported together, by
    :func:`_missing_datasets_finding`); other failures are findings of their own."""
    bundles, missing = {}, []
    for spec in suite.datasets:
        try:
            bundles[spec] = load_bundle(spec, options)
        except Exception as exc:
            if isinstance(exc, DataError) and not options.download and data_folders(spec, options):
                missing.append(spec)
                continue
            text = str(exc) if isinstance(exc, GibenchError) else f"{type(exc).__name__}: {exc}"
            add(Finding("error", f"dataset {spec.label}: {text}", _jobs_with(jobs, dataset=spec)))
    return bundles, missing


def data_folders(spec: PluginSpec, options: RunOptions) -> list[tuple[str, Path, str]]:
    """The file datasets ``spec`` reads: (name, folder, what torchvision expects inside); [] for in-memory ones."""
    from gibench.data import default_data_root
    from gibench.data.digits import BuiltFromDigits
    from gibench.data.torchvision_sets import TorchvisionDataset

    root = Path(options.data_root or default_data_root()).expanduser()
    try:
        dataset = registry.datasets.create(spec.name, **spec.params)
    except GibenchError:
        return []
    if isinstance(dataset, TorchvisionDataset):
        return [(dataset.folder, root / dataset.folder, dataset.expected_files)]
    source = dataset.file_source() if isinstance(dataset, BuiltFromDigits) else None
    if source is not None:
        return [(source.folder, root / source.folder, source.expected_files)]
    return []


def _missing_datasets_finding(suite: Suite, jobs: list[Job], specs: list[PluginSpec], runs_dir: Path,
                              options: RunOptions, executor: str, ray_options: Mapping[str, Any]) -> Finding:
    """One error for every dataset whose files are missing: each folder, and the one command that fetches them."""
    missing: dict[Path, tuple[str, str, list]] = {}  # folder -> (name, expected files, datasets that need it)
    for spec in specs:
        for name, folder, expected in data_folders(spec, options):
            missing.setdefault(folder, (name, expected, []))[2].append(spec)
    lines = [f"dataset {', '.join(s.label for s in needed)}: dataset {name!r} was not found (or is incomplete) in "
             f"{folder} (torchvision expects {expected} inside that folder)"
             for folder, (name, expected, needed) in missing.items()]
    root = Path(options.data_root) if options.data_root else next(iter(missing)).parent
    command = rerun_command(suite, runs_dir, options, executor, "--download", ray_options=ray_options)
    message = (f"{len(missing)} dataset(s) are not on disk, and nothing is downloaded without --download:\n      "
               + "\n      ".join(lines) + f"\n    Fix: `{command}` fetches them into {root}, or pass `--data-root DIR` "
               "where DIR/<name> holds the files already.")
    return Finding("error", message, tuple(j.hash for j in jobs if j.dataset in set(specs)))


def rerun_command(suite: Suite, runs_dir: Path, options: RunOptions, executor: str, *extra: str,
                  ray_options: Mapping[str, Any] | None = None) -> str:
    """``gibench run`` with this run's suite and options (those that differ from the defaults), the Ray executor's
    ``--address`` and ``--gpus-per-job`` when given, and ``extra``."""
    defaults = {f.name: f.default for f in dataclasses.fields(RunOptions)}
    parts = ["gibench", "run", "--suite", _suite_argument(suite), "--runs-dir", str(runs_dir)]
    flags = {"data_root": "--data-root", "device": "--device", "eval_batch_size": "--eval-batch-size",
             "claim_timeout_s": "--claim-timeout"}
    for name, flag in flags.items():
        value = getattr(options, name)
        if value is not None and value != defaults[name]:
            parts += [flag, f"{value:g}" if isinstance(value, float) else str(value)]
    if options.retry_failed:
        parts.append("--retry-failed")
    if executor != "local":
        parts += ["--executor", executor]
    ray_options = ray_options or {}
    if ray_options.get("address") is not None:
        parts += ["--address", str(ray_options["address"])]
    if ray_options.get("gpus_per_job") is not None:
        parts += ["--gpus-per-job", f"{ray_options['gpus_per_job']:g}"]
    return shlex.join([*parts, *extra])


def _suite_argument(suite: Suite) -> str:
    """The shipped suite's name when the suite is that file, else the path it came from."""
    from gibench.suites.suite import resolve_suite_path, shipped_suites

    if suite.name in shipped_suites() and suite.source:
        if Path(suite.source).resolve() == resolve_suite_path(suite.name).resolve():
            return suite.name
    return suite.source or suite.name


def _check_backbones(suite: Suite, jobs: list[Job], bundles: dict, add) -> None:
    from gibench.training.models import build_model

    for dataset, bundle in bundles.items():
        x = bundle.train.x[:2]
        shape = "×".join(str(d) for d in x.shape[1:])
        for spec in suite.backbones:
            if not _jobs_with(jobs, dataset=dataset, backbone=spec):  # a pair no grid of the suite trains
                continue
            try:
                with torch.random.fork_rng(devices=[]):
                    model = build_model(spec.name, spec.config, bundle).train()
                    with torch.no_grad():
                        out = model(x)
                if tuple(out.shape) != (len(x), bundle.num_classes):
                    raise ValueError(f"it returned shape {tuple(out.shape)}, expected ({len(x)}, {bundle.num_classes})")
            except Exception as exc:
                text = str(exc).strip().splitlines()[0][:300].rstrip(".") if str(exc).strip() else ""
                add(Finding("error", f"backbone {spec.label} does not run on dataset {dataset.label} (input {shape}, "
                                     f"{bundle.num_classes} classes): {type(exc).__name__}: {text}. Change its "
                                     "options, or pair it with datasets of a size it accepts (e.g. `img_size` for "
                                     "vision transformers).", _jobs_with(jobs, dataset=dataset, backbone=spec)))


def _check_plugins(jobs: list[Job], add) -> None:
    seen = set()
    for job in jobs:
        for kind, reg, spec in [("regularizer", registry.regularizers, job.regularizer)] + [
                ("evaluator", registry.evaluators, e) for e in job.evaluators]:
            if (kind, spec) in seen:
                continue
            seen.add((kind, spec))
            try:
                reg.create(spec.name, **spec.params)
            except Exception as exc:
                concerned = _jobs_with(jobs, regularizer=spec) if kind == "regularizer" else ()
                add(Finding("error", f"{kind} {spec.label} cannot be constructed: {type(exc).__name__}: {exc}",
                            concerned))


def _check_capabilities(suite: Suite, jobs: list[Job], bundles: dict, add) -> None:
    _check_annotations(jobs, bundles, add)
    for dataset, bundle in bundles.items():
        for spec in suite.evaluators:
            try:  # the instance: its requirements may depend on its options (score_alignment's `score: analytic`)
                requires = registry.evaluators.create(spec.name, **spec.params).requires
            except Exception:  # _check_plugins reports evaluators that cannot be constructed
                continue
            held_out = {VALIDATION_SPLIT} if suite.validation is not None else set()  # the runner holds it out
            missing = sorted(requires - bundle.capabilities - held_out)
            if missing:
                concerned = tuple(j.hash for j in jobs if j.dataset == dataset and spec in j.evaluators)
                if not concerned:  # no job of this dataset is scored by it (it is in another grid)
                    continue
                add(Finding("warning", f"evaluator {spec.label} requires {missing}, which dataset {dataset.label} "
                                       f"lacks: it will be recorded as skipped on its {len(concerned)} job(s).",
                            concerned))


def _check_annotations(jobs: list[Job], bundles: dict, add) -> None:
    """A regularizer that trains on annotations (``Regularizer.requires``) on a dataset without them is an error."""
    lacking: dict[tuple, list[str]] = {}
    for job in jobs:
        bundle = bundles.get(job.dataset)
        try:
            requires = registry.regularizers.get(job.regularizer.name).requires
        except Exception:  # _check_plugins reports regularizers that cannot be constructed
            continue
        if bundle is None or not requires:
            continue
        missing = sorted(set(requires) - bundle.capabilities)
        if missing:
            lacking.setdefault((job.regularizer.label, job.dataset.label, tuple(missing)), []).append(job.hash)
    for (regularizer, dataset, missing), hashes in lacking.items():
        having = datasets_with(frozenset(missing))
        fix = (f"(datasets that have them: {', '.join(having)}); train it on one of those" if having else
               "(no installed dataset has them); install a dataset that provides them")
        add(Finding("error", f"regularizer {regularizer} trains on the annotations {list(missing)}, which dataset "
                             f"{dataset} does not provide {fix}, or drop it from this dataset's grid.",
                    tuple(hashes)))


def datasets_with(capabilities: frozenset[str]) -> list[str]:
    """The installed datasets whose default configuration offers every one of ``capabilities`` (by
    :meth:`Dataset.sizes`, without loading; a dataset that cannot say is left out)."""
    names = []
    for name in registry.datasets.names():
        try:
            sizes = registry.datasets.create(name).sizes()
        except Exception:
            continue
        if sizes is not None and capabilities <= sizes.capabilities:
            names.append(name)
    return names
