"""Run a suite: for every job, reuse or train the model, then run every evaluator not yet stored.

Resumable by construction: everything finished is in the store (see gibench.store), a rerun reports it as cached
and recomputes nothing, and a run killed at any moment loses at most the job or evaluation that was in flight.
A job whose loss went non-finite is recorded as failed and the other jobs go on; it is not retried unless asked
(``retry_failed``), since training is deterministic. An evaluator that crashes is recorded as failed (with its
traceback) and retried on the next run; one whose required dataset capability is missing is recorded as skipped.

The executor here is a local loop over jobs in the suite's order.
"""

from __future__ import annotations

import datetime as dt
import time
import traceback
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from rich.console import Console
from rich.markup import escape
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn

from gibench import registry
from gibench.api import AuxCache, DatasetBundle, EvalContext, EvalResult, Evaluator
from gibench.auxiliary import AuxiliaryModels
from gibench.config import PluginSpec, Suite, canonical_hash
from gibench.data import default_data_root
from gibench.errors import ConfigError, GibenchError
from gibench.jobs import Job, expand
from gibench.params import jsonable
from gibench.saliency import input_gradient
from gibench.store import JobFolder, RunStore, result_key
from gibench.train import fit


@dataclass
class EvaluationReport:
    evaluator: str
    state: str  # "cached" | "ok" | "skipped" | "failed"
    reason: str | None = None


@dataclass
class JobReport:
    job: Job
    state: str  # "cached" | "trained" | "failed" | "planned"
    reason: str | None = None
    seconds: float = 0.0
    evaluations: list[EvaluationReport] = field(default_factory=list)


@dataclass
class RunSummary:
    runs_dir: Path
    suite: Suite
    jobs: list[JobReport]

    def count(self, state: str) -> int:
        return sum(report.state == state for report in self.jobs)

    def failures(self) -> list[str]:
        lines = [f"{r.job.label}: training failed: {r.reason}" for r in self.jobs if r.state == "failed"]
        lines += [f"{r.job.label}: {e.evaluator} failed: {e.reason.splitlines()[-1] if e.reason else ''}"
                  for r in self.jobs for e in r.evaluations if e.state == "failed"]
        return lines


def resolve_device(device: str | None) -> torch.device:
    if device in (None, "auto"):
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if device not in ("cpu", "cuda") and not str(device).startswith("cuda:"):
        raise ConfigError(f"--device must be 'cpu' or 'cuda' (or 'cuda:N'), got {device!r}.")
    if str(device).startswith("cuda") and not torch.cuda.is_available():
        raise ConfigError("--device cuda was requested but no CUDA device is available; use --device cpu.")
    return torch.device(device)


class _DatasetCache:
    """Datasets loaded once per run, on first use."""

    def __init__(self, data_root: Path, download: bool) -> None:
        self.data_root, self.download, self._bundles = data_root, download, {}

    def get(self, spec: PluginSpec) -> DatasetBundle:
        key = (spec.name, spec.config_json)
        if key not in self._bundles:
            dataset = registry.datasets.create(spec.name, **spec.params)
            self._bundles[key] = dataset.load(self.data_root, download=self.download)
        return self._bundles[key]


def run_suite(
    suite: Suite,
    runs_dir: Path,
    data_root: Path | None = None,
    download: bool = False,
    device: str | None = None,
    dry_run: bool = False,
    retry_failed: bool = False,
    eval_batch_size: int = 256,
    console: Console | None = None,
) -> RunSummary:
    """Train and evaluate every job of ``suite`` into ``runs_dir``; see the module docstring."""
    console = console or Console(stderr=True)
    jobs = expand(suite)
    store = RunStore(Path(runs_dir))
    if dry_run:
        return RunSummary(store.runs_dir, suite, [JobReport(job, _planned_state(store.job(job.hash))) for job in jobs])
    torch_device = resolve_device(device)
    datasets = _DatasetCache(Path(data_root) if data_root else default_data_root(), download)
    run_index = store.append_run(_manifest_entry(suite, jobs, torch_device))
    reports: list[JobReport] = []
    aux_cache = AuxCache()
    aux_models = AuxiliaryModels(store.runs_dir / "aux", torch_device)
    with _progress(console) as progress:
        overall = progress.add_task(f"suite {suite.name}", total=len(jobs))
        for number, job in enumerate(jobs, 1):
            task = progress.add_task(escape(f"[{number}/{len(jobs)}] {job.label}"), total=None)
            runner = _JobRunner(job, store.job(job.hash), datasets, torch_device, eval_batch_size, aux_cache,
                                aux_models)
            report = runner.run(
                retry_failed,
                on_step=lambda done, total, t=task: progress.update(t, completed=done, total=total),
                on_phase=lambda phase, t=task, n=number: progress.update(
                    t, description=escape(f"[{n}/{len(jobs)}] {job.label}: {phase}")),
            )
            reports.append(report)
            progress.remove_task(task)
            progress.advance(overall)
            console.print(_job_line(number, len(jobs), report))
    store.update_run(run_index, finished=_now())
    return RunSummary(store.runs_dir, suite, reports)


def _planned_state(folder: JobFolder) -> str:
    status = folder.status()
    if folder.is_trained():
        return "cached"
    return "failed" if status and status.get("state") == "failed" else "planned"


class _JobRunner:
    """Cache-or-train one job, then its evaluations."""

    def __init__(self, job: Job, folder: JobFolder, datasets: _DatasetCache, device: torch.device,
                 eval_batch_size: int, aux_cache: AuxCache, aux_models: AuxiliaryModels | None = None) -> None:
        self.job, self.folder, self.datasets, self.device = job, folder, datasets, device
        self.eval_batch_size, self.aux_cache = eval_batch_size, aux_cache
        self.aux_models = aux_models if aux_models is not None else AuxiliaryModels(None, device)

    def run(self, retry_failed: bool, on_step, on_phase=lambda phase: None) -> JobReport:
        self.folder.clean_temporaries()
        status = self.folder.status()
        if status and status.get("state") == "failed" and not retry_failed:
            return JobReport(self.job, "failed", f"{status.get('reason')} (recorded earlier; rerun with --retry-failed)")
        bundle = self.datasets.get(self.job.dataset)
        start = time.perf_counter()
        if self.folder.is_trained():
            model, state = self._load(bundle), "cached"
        else:
            on_phase("training")
            model, failure = self._train(bundle, on_step)
            if failure:
                return JobReport(self.job, "failed", failure, time.perf_counter() - start)
            state = "trained"
        report = JobReport(self.job, state, seconds=time.perf_counter() - start)
        for spec in self.job.evaluators:
            on_phase(f"evaluating {spec.name}")
            report.evaluations.append(self._evaluate(spec, model, bundle))
        return report

    def _load(self, bundle: DatasetBundle) -> torch.nn.Module:
        from gibench.models import build_model

        model = build_model(self.job.backbone.name, self.job.backbone.config, bundle)
        return self.folder.load_weights(model, self.device).to(self.device).eval()

    def _train(self, bundle: DatasetBundle, on_step) -> tuple[torch.nn.Module, str | None]:
        self.folder.clear_status()
        self.folder.write_spec(job_record(self.job))
        regularizer = registry.regularizers.create(self.job.regularizer.name, **self.job.regularizer.params)
        outcome = fit(bundle, self.job.backbone, regularizer, self.job.train, self.job.seed, self.device, on_step)
        if outcome.failure:
            self.folder.save_failed(outcome.failure, outcome.log)
        else:
            self.folder.save_trained(outcome.model, outcome.log)
        return outcome.model, outcome.failure

    def _evaluate(self, spec: PluginSpec, model: torch.nn.Module, bundle: DatasetBundle) -> EvaluationReport:
        evaluator = registry.evaluators.create(spec.name, **spec.params)
        key = result_key(spec.name, evaluator.version, canonical_hash(spec.config))
        if self.folder.has_result(key):
            return EvaluationReport(spec.name, "cached")
        record = _result_header(spec, evaluator)
        missing = sorted(evaluator.requires - bundle.capabilities)
        if missing:
            reason = f"dataset {bundle.name!r} lacks the capabilities {missing} that {spec.name!r} requires"
            self.folder.save_result(key, {**record, "status": "skipped", "reason": reason})
            return EvaluationReport(spec.name, "skipped", reason)
        staging = self.folder.staging_artifact_dir(key)
        start = time.perf_counter()
        with self.aux_models.tracking() as used_aux:
            try:
                result = evaluator.evaluate(self._context(model, bundle, staging))
                _check_metrics(evaluator, result)
            except Exception as exc:  # an evaluator bug must not lose the other results
                reason = str(exc) if isinstance(exc, GibenchError) else traceback.format_exc()
                record["auxiliary"] = [aux.record() for aux in used_aux]
                self.folder.save_result(key, {**record, "status": "failed", "reason": reason})
                return EvaluationReport(spec.name, "failed", reason)
        record.update(status="ok", reason=None, seconds=round(time.perf_counter() - start, 3),
                      auxiliary=[aux.record() for aux in used_aux], **_result_body(result, key))
        self.folder.save_result(key, record, staging)
        return EvaluationReport(spec.name, "ok")

    def _context(self, model: torch.nn.Module, bundle: DatasetBundle, artifact_dir: Path) -> EvalContext:
        torch.manual_seed(self.job.seed)
        job = self.job

        def refit(other: DatasetBundle) -> torch.nn.Module:
            regularizer = registry.regularizers.create(job.regularizer.name, **job.regularizer.params)
            return fit(other, job.backbone, regularizer, job.train, job.seed, self.device).model

        return EvalContext(model=model.eval(), data=bundle, saliency=input_gradient, device=self.device,
                           seed=job.seed, artifact_dir=artifact_dir, fit=refit, cache=self.aux_cache,
                           batch_size=self.eval_batch_size, aux=self.aux_models, job=job)


def job_record(job: Job) -> dict[str, Any]:
    """What job.json holds: the training spec plus display labels and plugin provenance."""
    source = registry.regularizers.source(job.regularizer.name)
    return {
        "hash": job.hash,
        "spec": job.training_spec(),
        "labels": {"dataset": job.dataset.label, "backbone": job.backbone.name, "backbone_params": job.backbone.params,
                   "regularizer": job.regularizer.name, "regularizer_params": job.regularizer.params,
                   "variant": job.regularizer.label, "seed": job.seed},
        "plugins": {"regularizer": {"distribution": source.distribution, "version": source.version},
                    "dataset": _source_dict(registry.datasets, job.dataset.name)},
    }


def _source_dict(reg: registry.Registry, name: str) -> dict[str, str]:
    source = reg.source(name)
    return {"distribution": source.distribution, "version": source.version}


def _result_header(spec: PluginSpec, evaluator: Evaluator) -> dict[str, Any]:
    return {
        "evaluator": spec.name, "version": evaluator.version, "params": spec.params, "config": spec.config,
        "config_hash": canonical_hash(spec.config),
        "metrics": [jsonable(m) for m in evaluator.metrics],
        "plugin": _source_dict(registry.evaluators, spec.name), "finished": _now(),
    }


def _result_body(result: EvalResult, key: str) -> dict[str, Any]:
    return {
        "scalars": {k: float(v) for k, v in result.scalars.items()},
        "curves": {k: jsonable(c) for k, c in result.curves.items()},
        "artifacts": {k: f"artifacts/{key}/{v}" for k, v in result.artifacts.items()},
    }


def _check_metrics(evaluator: Evaluator, result: EvalResult) -> None:
    missing = [m.name for m in evaluator.metrics if m.name not in result.scalars]
    if missing:
        raise GibenchError(f"evaluator {evaluator.name!r} declared metrics {missing} but did not return them")


def _manifest_entry(suite: Suite, jobs: list[Job], device: torch.device) -> dict[str, Any]:
    from gibench.provenance import environment_info

    names = {"regularizers": {s.name for s in suite.regularizers}, "evaluators": {s.name for s in suite.evaluators},
             "datasets": {s.name for s in suite.datasets}}
    plugins = {kind: {n: _source_dict(getattr(registry, kind), n) for n in sorted(group)}
               for kind, group in names.items()}
    return {"suite_name": suite.name, "suite_hash": suite.hash, "suite": jsonable(suite.raw),
            "suite_source": suite.source, "jobs": [job.hash for job in jobs], "started": _now(), "finished": None,
            "environment": environment_info(str(device)), "plugins": plugins}


def _now() -> str:
    return dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds")


@contextmanager
def _progress(console: Console) -> Iterator[Progress]:
    columns = (TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(),
               TextColumn("ETA"), TimeRemainingColumn())
    with Progress(*columns, console=console, transient=True) as progress:
        yield progress


def _job_line(number: int, total: int, report: JobReport) -> str:
    training = {"cached": "[cyan]cached[/]", "trained": f"[green]trained[/] in {report.seconds:.1f}s",
                "failed": f"[red]failed[/]: {escape(report.reason or '')}"}[report.state]
    evals = ", ".join(f"{e.evaluator} {_eval_word(e)}" for e in report.evaluations)
    return escape(f"[{number}/{total}] {report.job.label}") + f": {training}" + (f"; {evals}" if evals else "")


def _eval_word(e: EvaluationReport) -> str:
    return {"cached": "[cyan]cached[/]", "ok": "[green]done[/]", "skipped": "[yellow]skipped[/]",
            "failed": "[red]FAILED[/]"}[e.state]
