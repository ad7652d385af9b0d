"""One job, in the process that claimed it: cache-or-train the model, then run every evaluation not yet stored.

Isolation: nothing that goes wrong in one job escapes it. Training that raises anything (a timm ValueError for a bad
option, an assertion about the input size, a plugin bug) is recorded as failed in ``status.json`` with its reason and
traceback; a non-finite loss likewise (gibench.training.train). Failed jobs are not retrained unless asked
(``retry_failed``), because training is deterministic, except out-of-memory failures, which depend on what else ran on
the device: those are marked ``retryable`` and tried again by the next run. An evaluator that raises is recorded as a
failed result (retried by the next run); one whose required capability the dataset lacks is recorded as skipped.

Out of memory in an evaluation steps the evaluation batch size down with timm's ``decay_batch_step`` (two intra
steps between powers of two: 256, 192, 128, 96, 64, ...) and tries again, down to 1; the batch size that fitted and
the ones that did not are recorded in the result (``eval_batch_size``, ``oom_steps``). Evaluators read the batch size
from ``EvalContext.batch_size``, and their numbers do not depend on it (it only chunks the same computation).

Damaged files (see gibench.store): a checkpoint whose size or SHA-256 differs from the one its commit point recorded,
or that does not load, is moved into quarantine and the job is retrained. Its stored results are kept only if the
retrained checkpoint is byte-identical to the one they were computed from (each result records that checkpoint's
SHA-256; training on the CPU is deterministic, so there they are kept); otherwise they are stale, moved into
quarantine too, and recomputed. The same rule applies whenever a result's recorded checkpoint differs from the
stored one (for example after ``--retry-failed`` retrained a job).
"""

from __future__ import annotations

__all__ = [
    "EvaluationReport", "JOB_STATES", "JobReport", "JobRunner", "now", "training_oom_message",
]

import datetime as dt
import math
import time
import traceback
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from timm.utils import decay_batch_step

from gibench.api import registry
from gibench.api.plugin import DatasetBundle, EvalContext, EvalResult, Evaluator
from gibench.api.saliency import saliency_for
from gibench.core.errors import GibenchError
from gibench.core.fsio import DamagedFileError
from gibench.core.identity import identity_hash
from gibench.core.params import jsonable
from gibench.store.auxiliary import AuxiliaryModels
from gibench.store.records import ResultRecord, job_record, plugin_source
from gibench.store.runs import JobFolder, evaluation_key
from gibench.suites.jobs import Job
from gibench.suites.suite import PluginSpec
from gibench.training.train import TrainingOutOfMemory, fit

#: Job states: trained / cached (done), failed (training failed, now or earlier), busy (another live worker holds its
#: claim; nothing was done), planned / invalid (dry run: would train / preflight found an error).
JOB_STATES = ("trained", "cached", "failed", "busy", "planned", "invalid")


@dataclass
class EvaluationReport:
    evaluator: str
    state: str  # "cached" | "ok" | "skipped" | "failed"
    reason: str | None = None
    eval_batch_size: int | None = None
    oom_steps: list[int] = field(default_factory=list)


@dataclass
class JobReport:
    job: Job
    state: str  # one of JOB_STATES
    reason: str | None = None
    seconds: float = 0.0
    evaluations: list[EvaluationReport] = field(default_factory=list)
    traceback: str | None = None
    findings: list[str] = field(default_factory=list)  # preflight errors and warnings of this job (dry run)


class JobRunner:
    """Cache-or-train one job, then its evaluations. The caller holds the job's claim."""

    def __init__(self, job: Job, folder: JobFolder, bundle: DatasetBundle, device: torch.device,
                 eval_batch_size: int, aux_models: AuxiliaryModels | None = None,
                 on_step=lambda done, total: None, on_phase=lambda phase: None) -> None:
        self.job, self.folder, self.bundle, self.device = job, folder, bundle, device
        self.eval_batch_size = eval_batch_size
        self.aux_models = aux_models if aux_models is not None else AuxiliaryModels(None, device)
        self.on_step, self.on_phase = on_step, on_phase
        self._model: torch.nn.Module | None = None

    def run(self, retry_failed: bool) -> JobReport:
        self.folder.clean_temporaries()
        status = self.folder.status()
        if status and status.keeps_a_rerun_from_training(retry_failed):
            return JobReport(self.job, "failed", f"{status.reason} (recorded earlier; rerun with --retry-failed)",
                             traceback=status.traceback)
        start = time.perf_counter()
        state = "cached" if self.folder.is_trained() else "trained"
        if state == "trained":
            failed = self._train()
            if failed is not None:
                failed.seconds = time.perf_counter() - start
                return failed
        if self.folder.spec() is None:  # a damaged or missing job.json of a trained job: rewrite it
            self.folder.write_spec(job_record(self.job))
        report = JobReport(self.job, state, seconds=time.perf_counter() - start)
        for spec in self.job.evaluators:
            report.evaluations.append(self._evaluate(spec))
        return report

    # -- training ----------------------------------------------------------------------------------------------------

    def _train(self) -> JobReport | None:
        """Train and commit the job; a JobReport when it failed (recorded in status.json), else None."""
        self.on_phase("training")
        self.folder.clear_status()
        self.folder.write_spec(job_record(self.job))
        job = self.job
        log: dict[str, Any] = {}
        try:
            regularizer = registry.regularizers.create(job.regularizer.name, **job.regularizer.params)
            outcome = fit(self.bundle, job.backbone, regularizer, job.train, job.seed, self.device, self.on_step)
        except (torch.OutOfMemoryError, TrainingOutOfMemory):
            _free_device_memory()
            reason = training_oom_message(job, self.device)
            self.folder.save_failed(reason, log, traceback.format_exc(), retryable=True, finished=now())
            self.folder.record_event("failed", reason="out of memory")
            return JobReport(job, "failed", reason, traceback=traceback.format_exc())
        except Exception as exc:  # any error in one job must not stop the others
            reason = f"{type(exc).__name__}: {exc}" if str(exc) else type(exc).__name__
            reason += (f" (traceback in {self.folder.root / 'status.json'}; fix the cause, then rerun with "
                       "--retry-failed)")
            self.folder.save_failed(reason, log, traceback.format_exc(), finished=now())
            self.folder.record_event("failed", reason=type(exc).__name__)
            return JobReport(job, "failed", reason, traceback=traceback.format_exc())
        if outcome.failure:
            self.folder.save_failed(outcome.failure, outcome.log, finished=now())
            self.folder.record_event("failed", reason="non-finite loss")
            return JobReport(job, "failed", outcome.failure)
        status = self.folder.save_trained(outcome.model, outcome.log, finished=now())
        self.folder.record_event("trained", checkpoint_sha256=status.checkpoint_sha256)
        self._model = outcome.model.to(self.device).eval()
        return None

    def _model_for_evaluation(self) -> torch.nn.Module:
        """The trained model, loaded on first need; a damaged checkpoint is quarantined and the job retrained."""
        if self._model is None:
            from gibench.training.models import build_model

            model = build_model(self.job.backbone.name, self.job.backbone.config, self.bundle)
            try:
                self._model = self.folder.load_weights(model, self.device).to(self.device).eval()
            except DamagedFileError as exc:
                self.folder.checkpoint_damaged(exc.problem)
                failed = self._train()
                if failed is not None:
                    raise GibenchError(f"retraining after a damaged checkpoint failed: {failed.reason}") from None
        return self._model

    # -- evaluation --------------------------------------------------------------------------------------------------

    def _evaluate(self, spec: PluginSpec) -> EvaluationReport:
        try:
            evaluator = registry.evaluators.create(spec.name, **spec.params)
        except Exception as exc:  # preflight catches these; a plugin that breaks later still must not stop the job
            return EvaluationReport(spec.name, "failed", f"could not construct the evaluator: {exc}")
        key = evaluation_key(spec.name, evaluator.version, spec.config)
        checkpoint = self._checkpoint_sha256()
        stored = self.folder.result(key)
        if stored is not None and stored.done:
            if stored.computed_from(checkpoint):
                return EvaluationReport(spec.name, "cached")
            self.folder.set_aside_result(key, f"computed from checkpoint {stored.checkpoint_sha256}, but the job's "
                                              f"checkpoint is now {checkpoint}")
        header = _result_header(spec, evaluator, checkpoint)
        missing = sorted(evaluator.requires - self.bundle.capabilities)
        if missing:
            reason = f"dataset {self.bundle.name!r} lacks the capabilities {missing} that {spec.name!r} requires"
            self.folder.save_result(key, ResultRecord(**header, status="skipped", reason=reason))
            return EvaluationReport(spec.name, "skipped", reason)
        return self._run_evaluator(spec, evaluator, key, header)

    def _run_evaluator(self, spec: PluginSpec, evaluator: Evaluator, key: str, header: dict) -> EvaluationReport:
        self.on_phase(f"evaluating {spec.name}")  # a phase only for work: a stored or skipped result is no phase
        batch_size, oom_steps = self.eval_batch_size, []
        try:
            model = self._model_for_evaluation()
        except GibenchError as exc:
            self.folder.save_result(key, ResultRecord(**header, status="failed", reason=str(exc)))
            return EvaluationReport(spec.name, "failed", str(exc))
        header["checkpoint_sha256"] = self._checkpoint_sha256()  # a retrained checkpoint may differ
        start = time.perf_counter()
        with self.aux_models.tracking() as used_aux:
            while True:
                staging = self.folder.staging_artifact_dir(key)
                try:
                    result = evaluator.evaluate(self._context(model, staging, batch_size, evaluator))
                    _check_metrics(evaluator, result)
                    break
                except torch.OutOfMemoryError:
                    _free_device_memory()
                    oom_steps.append(batch_size)
                    batch_size = decay_batch_step(batch_size)
                    if batch_size >= 1:
                        continue
                    reason = (f"out of memory on {self.device} even with evaluation batch size 1 (tried "
                              f"{oom_steps}); evaluate on a device with more free memory or give each job more of it "
                              "(--gpus-per-job)")
                except Exception as exc:  # an evaluator bug must not lose the other results
                    reason = str(exc) if isinstance(exc, GibenchError) else traceback.format_exc()
                header.update(auxiliary=[aux.record() for aux in used_aux], eval_batch_size=batch_size or None,
                              oom_steps=oom_steps)
                self.folder.save_result(key, ResultRecord(**header, status="failed", reason=reason))
                return EvaluationReport(spec.name, "failed", reason, batch_size or None, oom_steps)
        record = ResultRecord(**header, status="ok", seconds=round(time.perf_counter() - start, 3),
                              auxiliary=[aux.record() for aux in used_aux], eval_batch_size=batch_size,
                              oom_steps=oom_steps, **_result_body(result, key))
        self.folder.save_result(key, record, staging)
        return EvaluationReport(spec.name, "ok", None, batch_size, oom_steps)

    def _checkpoint_sha256(self) -> str | None:
        status = self.folder.status()
        return status.checkpoint_sha256 if status else None

    def _context(self, model: torch.nn.Module, artifact_dir: Path, batch_size: int,
                 evaluator: Evaluator) -> EvalContext:
        """The evaluation context; ``saliency`` is the map the evaluator's ``saliency`` option names (default
        ``input_gradient``; :func:`gibench.api.saliency.saliency_for`)."""
        torch.manual_seed(self.job.seed)
        return EvalContext(model=model.eval(), data=self.bundle, saliency=saliency_for(evaluator.config),
                           device=self.device, seed=self.job.seed, artifact_dir=artifact_dir, batch_size=batch_size,
                           aux=self.aux_models, job=self.job)


def training_oom_message(job: Job, device: torch.device) -> str:
    return (
        f"out of memory while training on {device} with train.batch_size = {job.train.batch_size} "
        f"({job.backbone.label}, {job.regularizer.label}). Lower train.batch_size in the suite file, choose a smaller "
        f"backbone, keep train.amp on (bfloat16 on CUDA), or run fewer jobs per GPU (raise --gpus-per-job). "
        "An out-of-memory failure is retried by the next run."
    )


def _free_device_memory() -> None:
    if torch.cuda.is_available():
        torch.cuda.empty_cache()


def _result_header(spec: PluginSpec, evaluator: Evaluator, checkpoint_sha256: str | None) -> dict[str, Any]:
    return {
        "evaluator": spec.name, "version": evaluator.version, "params": spec.params, "config": spec.config,
        "config_hash": identity_hash(spec.config), "metrics": [jsonable(m) for m in evaluator.metrics],
        "plugin": plugin_source(registry.evaluators, spec.name), "finished": now(),
        "checkpoint_sha256": checkpoint_sha256,
    }


def _result_body(result: EvalResult, key: str) -> dict[str, Any]:
    return {
        "scalars": {k: float(v) for k, v in result.scalars.items()},
        "curves": {k: jsonable(c) for k, c in result.curves.items()},
        "artifacts": {k: f"artifacts/{key}/{v}" for k, v in result.artifacts.items()},
    }


def _check_metrics(evaluator: Evaluator, result: EvalResult) -> None:
    """Every declared metric is returned, as a finite number: an ``ok`` result with a NaN could not be submitted
    (``gibench validate`` refuses it), so it is recorded as failed now, with the metrics named."""
    missing = [m.name for m in evaluator.metrics if m.name not in result.scalars]
    if missing:
        raise GibenchError(f"evaluator {evaluator.name!r} declared metrics {missing} but did not return them")
    undefined = {name: value for name, value in result.scalars.items() if not math.isfinite(float(value))}
    if undefined:
        raise GibenchError(f"evaluator {evaluator.name!r} returned non-finite values {undefined}: the metric is "
                           "undefined for this model (for example a normalized area when no evaluated image is "
                           "classified correctly), so the evaluation is recorded as failed rather than as a score")


def now() -> str:
    return dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds")
