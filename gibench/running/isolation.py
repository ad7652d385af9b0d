"""Process isolation of the local executor: each job trains and evaluates in a worker process that the run supervises.

A job that kills its process (``os._exit``), segfaults, is killed by the out-of-memory killer or hangs costs only
itself. The run's process (the parent) schedules the jobs, relays their events to its observer, enforces the time
limits and records what a dead worker could not; the worker runs :func:`gibench.running.run_job.run_job` exactly as
the in-process executor does (claim, cache-or-train, evaluate, release), with an observer that forwards its events over
a pipe.

**Worker reuse.** Starting a worker (``spawn``: a fresh interpreter importing torch, timm and gibench) costs seconds
(docs/benchmarks.md, Process isolation), more than a tiny job's whole training, so one worker runs job after job and
is replaced only after a fault (it died, or a limit stopped it) and after :data:`WORKER_MAX_JOBS` jobs, which bounds
what a leaking plugin can accumulate. ``fork`` is never used: it is unsafe with torch's thread pools and CUDA.

**Faults.** A worker that dies during a job is a failed job with its reason: the exit code or the signal (SIGKILL
says it may have been the out-of-memory killer), the phase it was in (loading, training, or which evaluation) and the
last lines of its standard error (written to a temporary file per worker; ``faulthandler`` adds a segfault's Python
stack). Died in training (or before): ``status.json`` failed with the reason, retryable when a signal ended it (the
environment: the OOM killer, an operator), not when it exited with a code of its own (as an exception in training is,
today). Died in an evaluation: a failed result for that evaluation; the training and the evaluations it finished stay,
and the next run runs the failed one again and those after it. The parent takes the job's claim over before it
records (a dead owner's claim on this host is taken over at once) and releases it, so no stale claim remains.

**Time limits.** ``job_timeout_s`` (``--job-timeout``, from the job's start in its worker) and ``eval_timeout_s``
(``--eval-timeout``, from the start of each evaluation), measured by the parent from the worker's events: past one,
the worker gets SIGTERM, then SIGKILL after :data:`KILL_GRACE_S`, and the job is recorded as timed out in the phase
it was in, as a fault (not retryable: raise the limit and rerun with ``--retry-failed``); the run goes on with a new
worker.

**Orphans.** A worker dies with its parent: on Linux ``prctl(PR_SET_PDEATHSIG, SIGKILL)``, and everywhere a thread
that ends the worker once its parent process is gone. The kernel releases the lock of a dead worker's claim.

**In-process plugins.** Plugins registered in the parent (``gibench.testing.registered``, ``registry.register``) are
sent to the worker by reference (module and name) and registered there again; a class the worker cannot import (one
defined inside a function) makes the run fall back to in-process execution, with a warning.
"""

from __future__ import annotations

__all__ = ["KILL_GRACE_S", "WORKER_MAX_JOBS", "Supervisor"]

import faulthandler
import multiprocessing
import os
import pickle
import signal
import sys
import tempfile
import threading
import time
import traceback
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from gibench.api import registry
from gibench.core.errors import GibenchError
from gibench.core.fsio import Claim
from gibench.running.job_runner import EvaluationReport, JobReport, now
from gibench.running.options import RunObserver, RunOptions
from gibench.suites.jobs import Job

#: Jobs one worker runs before it is replaced by a fresh one (bounds what a leak can accumulate).
WORKER_MAX_JOBS = 25
#: Seconds between SIGTERM and SIGKILL when a limit stops a worker.
KILL_GRACE_S = 5.0
#: How often the parent looks at its worker between events.
POLL_S = 0.05
#: The shortest interval between two ``job_step`` events a worker sends (its last step is always sent).
STEP_EVENT_INTERVAL_S = 0.1
#: Lines of a dead worker's standard error quoted in the recorded failure (``traceback``) and in its reason.
STDERR_LINES, REASON_LINES = 40, 3

_REGISTRIES = {"regularizers": registry.regularizers, "evaluators": registry.evaluators,
               "datasets": registry.datasets}


# -- the worker ------------------------------------------------------------------------------------------------------


class _Forwarder(RunObserver):
    """Sends a job's events to the parent; a step at most every :data:`STEP_EVENT_INTERVAL_S` (and the last)."""

    def __init__(self, conn: Any) -> None:
        self.conn, self._last_step = conn, 0.0

    def job_started(self, job, number, total): self.conn.send(("started", ()))  # noqa: E704
    def job_phase(self, job, phase): self.conn.send(("phase", (phase,)))  # noqa: E704
    def warning(self, message): self.conn.send(("warning", (message,)))  # noqa: E704
    def job_finished(self, report): self.conn.send(("finished", (report,)))  # noqa: E704

    def job_step(self, job, done, total):
        now_s = time.monotonic()
        if done >= total or now_s - self._last_step >= STEP_EVENT_INTERVAL_S:
            self._last_step = now_s
            self.conn.send(("step", (done, total)))


def _die_with_parent(parent_pid: int) -> None:
    """End this process when ``parent_pid`` is gone: PR_SET_PDEATHSIG on Linux, and a watching thread everywhere."""
    if sys.platform.startswith("linux"):
        try:
            import ctypes

            ctypes.CDLL("libc.so.6", use_errno=True).prctl(1, signal.SIGKILL)  # PR_SET_PDEATHSIG = 1
        except (OSError, AttributeError):
            pass
    if os.getppid() != parent_pid:  # the parent died before the line above took effect
        os._exit(1)

    def watch() -> None:
        while os.getppid() == parent_pid:
            time.sleep(0.5)
        os._exit(1)

    threading.Thread(target=watch, name="parent watch", daemon=True).start()


def _worker_main(tasks: Any, events: Any, parent_pid: int, plugins: bytes, stderr_path: str) -> None:
    """The worker process: register the parent's in-process plugins, then run the jobs it is sent until told to stop
    (``None``) or its parent is gone."""
    _die_with_parent(parent_pid)
    fd = os.open(stderr_path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)
    os.dup2(fd, 2)
    os.close(fd)
    sys.stderr = open(2, "w", buffering=1, closefd=False, errors="backslashreplace")  # noqa: SIM115
    faulthandler.enable(sys.stderr)
    events.send(("ready", (_register(plugins),)))
    from gibench.running.run_job import run_job

    while True:
        try:
            task = tasks.recv()
        except EOFError:
            os._exit(0)
        if task is None:
            return
        job, runs_dir, options, number, total = task
        try:
            report = run_job(job, runs_dir, options, _Forwarder(events), number=number, total=total)
        except BaseException as exc:  # an error of the call itself (options, runs directory): the parent raises it
            traceback.print_exc()
            try:
                events.send(("raised", (exc,)))
            except Exception:  # an exception that does not pickle
                events.send(("raised", (GibenchError(f"{type(exc).__name__}: {exc}"),)))
            continue
        events.send(("done", (report,)))


def _register(plugins: bytes) -> list[str]:
    """Register the parent's in-process plugins here; the problems, one line each (empty: all registered)."""
    problems = []
    for kind, name, ref in pickle.loads(plugins):
        reg = _REGISTRIES[kind]
        try:
            cls = pickle.loads(ref)
            if name not in reg.names() or reg.get(name) is not cls:
                reg.register(name, cls)
        except Exception as exc:
            problems.append(f"{kind[:-1]} {name!r}: {type(exc).__name__}: {exc}")
    return problems


def _in_process_plugins() -> tuple[bytes, list[str]]:
    """The plugins registered in this process (``Registry.register``), pickled by reference, and those that cannot be
    (local classes). Installed plugins are not looked at: the worker discovers them itself."""
    sent, problems = [], []
    for kind, reg in _REGISTRIES.items():
        for name in sorted(getattr(reg, "_shadowed", {})):  # the names register() added
            try:
                sent.append((kind, name, pickle.dumps(reg.get(name))))
            except Exception as exc:
                problems.append(f"{kind[:-1]} {name!r}: {type(exc).__name__}: {exc}")
    return pickle.dumps(sent), problems


# -- the parent ------------------------------------------------------------------------------------------------------


class _Fallback(Exception):
    """The worker cannot see this run's plugins: run in this process instead."""


@dataclass
class _Worker:
    process: Any
    tasks: Any
    events: Any
    stderr_path: Path
    jobs: int = 0


@dataclass
class _Attempt:
    """What the parent knows of the job its worker runs: from the worker's events."""

    job: Job
    number: int
    total: int
    started: float | None = None  # monotonic time of job_started
    phase: str = "loading"
    phase_started: float = 0.0
    trained: bool = False
    stderr_offset: int = 0


class Supervisor:
    """Runs jobs in a worker process, one after another (see the module docstring). ``run_job`` has the contract of
    :func:`gibench.running.run_job.run_job`; use as a context manager, which ends the worker."""

    def __init__(self, runs_dir: Path, options: RunOptions, warn: Any = None) -> None:
        self.runs_dir, self.options = Path(runs_dir), options
        self.warn = warn or (lambda message: None)
        self.ctx = multiprocessing.get_context("spawn")
        self.worker: _Worker | None = None
        self.in_process = False
        self.plugins, problems = _in_process_plugins()
        if problems:
            self._fall_back(problems)

    def __enter__(self) -> Supervisor:
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()

    def close(self) -> None:
        if self.worker is not None:
            worker, self.worker = self.worker, None
            try:
                worker.tasks.send(None)
            except (OSError, EOFError, BrokenPipeError):
                pass
            worker.process.join(KILL_GRACE_S)
            _stop(worker.process)
            worker.stderr_path.unlink(missing_ok=True)

    def _fall_back(self, problems: list[str]) -> None:
        self.in_process = True
        self.warn("a worker process cannot load these plugins registered in this process, so the jobs run in this "
                  f"process instead (no isolation, no time limits): {'; '.join(problems)}. Define them at the top "
                  "level of an importable module, or pass --isolation none.")

    # -- the worker's life -------------------------------------------------------------------------------------------

    def _start(self) -> _Worker:
        handle, name = tempfile.mkstemp(prefix="gibench-worker-", suffix=".stderr")
        os.close(handle)
        tasks_r, tasks_w = self.ctx.Pipe(duplex=False)
        events_r, events_w = self.ctx.Pipe(duplex=False)
        process = self.ctx.Process(target=_worker_main, name="gibench worker",
                                   args=(tasks_r, events_w, os.getpid(), self.plugins, name))
        process.start()
        tasks_r.close()
        events_w.close()
        worker = _Worker(process, tasks_w, events_r, Path(name))
        kind, args = self._receive(worker, None)
        if kind != "ready":
            self._discard(worker)
            raise GibenchError(f"a worker process did not start: {self._death(worker, None)[0]}. A script that calls "
                               "run_suite must do so under `if __name__ == '__main__':` (a worker process imports "
                               "the script's module); or run the jobs in this process with --isolation none "
                               "(isolation='none').")
        if args[0]:
            self._discard(worker)
            raise _Fallback(args[0])
        return worker

    def _receive(self, worker: _Worker, timeout: float | None) -> tuple[str, tuple]:
        """The worker's next event; ``("dead", ())`` when it is gone, ``("idle", ())`` after ``timeout`` seconds."""
        try:
            if timeout is not None and not worker.events.poll(timeout):
                return ("idle", ()) if worker.process.is_alive() else self._last_words(worker)
            return worker.events.recv()
        except (EOFError, OSError):
            return "dead", ()

    def _last_words(self, worker: _Worker) -> tuple[str, tuple]:
        """Events a worker sent just before it died, else dead."""
        try:
            return worker.events.recv() if worker.events.poll(0) else ("dead", ())
        except (EOFError, OSError):
            return "dead", ()

    def _discard(self, worker: _Worker) -> None:
        _stop(worker.process)
        for conn in (worker.tasks, worker.events):
            conn.close()
        worker.stderr_path.unlink(missing_ok=True)
        if self.worker is worker:
            self.worker = None

    # -- a job ---------------------------------------------------------------------------------------------------------

    def run_job(self, job: Job, observer: RunObserver, *, number: int, total: int) -> JobReport:
        if not self.in_process and not self._nothing_to_run(job):
            try:
                return self._run_isolated(job, observer, number, total)
            except _Fallback as exc:
                self._fall_back(list(exc.args[0]))
        from gibench.running.run_job import run_job

        return run_job(job, self.runs_dir, self.options, observer, number=number, total=total)

    def _nothing_to_run(self, job: Job) -> bool:
        """True when the store already holds all of ``job``: trained with every evaluation stored, or failed for good
        (not retried). Such a job only reads files, so it runs here, and a cached rerun starts no worker."""
        from gibench.api import registry
        from gibench.store.runs import RunStore, evaluation_key

        folder = RunStore(self.runs_dir, repair=False, warn=lambda message: None).job(job.hash)
        status = folder.status()
        if status is not None and status.state == "failed":
            return not (self.options.retry_failed or status.retryable)
        if not folder.is_trained():
            return False
        try:
            keys = [evaluation_key(spec.name, registry.evaluators.get(spec.name).version,
                                   spec.config) for spec in job.evaluators]
        except Exception:  # a plugin that does not load: let the worker record it
            return False
        checkpoint = status.checkpoint_sha256 if status is not None else None
        results = [folder.result(key) for key in keys]  # done, and computed from today's checkpoint
        return all(r is not None and r.done and r.computed_from(checkpoint) for r in results)

    def _run_isolated(self, job: Job, observer: RunObserver, number: int, total: int) -> JobReport:
        if self.worker is None or self.worker.jobs >= WORKER_MAX_JOBS or not self.worker.process.is_alive():
            if self.worker is not None:
                self.close()
            self.worker = self._start()
        worker = self.worker
        worker.jobs += 1
        attempt = _Attempt(job, number, total, stderr_offset=_size(worker.stderr_path))
        worker.tasks.send((job, self.runs_dir, self.options, number, total))
        while True:
            kind, args = self._receive(worker, POLL_S)
            if kind == "idle":
                fault = self._over_limit(attempt)
                if fault is None:
                    continue
                _stop(worker.process)
                report = self._record(attempt, fault, worker, retryable=False)
            elif kind == "dead":
                reason, retryable = self._death(worker, attempt)
                report = self._record(attempt, reason, worker, retryable=retryable)
            elif kind == "raised":
                raise args[0]
            elif kind == "done":
                return args[0]
            else:
                self._relay(attempt, observer, kind, args)
                continue
            self._discard(worker)
            if attempt.started is None:
                observer.job_started(job, number, total)
            observer.job_finished(report)
            return report

    def _relay(self, attempt: _Attempt, observer: RunObserver, kind: str, args: tuple) -> None:
        job = attempt.job
        if kind == "started":
            attempt.started = attempt.phase_started = time.monotonic()
            observer.job_started(job, attempt.number, attempt.total)
        elif kind == "phase":
            attempt.phase, attempt.phase_started = args[0], time.monotonic()
            attempt.trained = attempt.trained or args[0] == "training"
            observer.job_phase(job, args[0])
        elif kind == "step":
            observer.job_step(job, *args)
        elif kind == "warning":
            observer.warning(*args)
        elif kind == "finished":
            observer.job_finished(*args)

    def _over_limit(self, attempt: _Attempt) -> str | None:
        """The reason a running job is stopped, or None while it is within its limits."""
        if attempt.started is None:
            return None
        elapsed = time.monotonic() - attempt.started
        job_limit, eval_limit = self.options.job_timeout_s, self.options.eval_timeout_s
        if job_limit is not None and elapsed > job_limit:
            return (f"timed out in {_phase(attempt.phase)}: the job ran longer than --job-timeout {job_limit:g} s, so "
                    "its process was stopped")
        in_eval = time.monotonic() - attempt.phase_started
        if eval_limit is not None and attempt.phase.startswith("evaluating ") and in_eval > eval_limit:
            return (f"timed out in {_phase(attempt.phase)}: the evaluation ran longer than --eval-timeout "
                    f"{eval_limit:g} s, so its process was stopped")
        return None

    def _death(self, worker: _Worker, attempt: _Attempt | None) -> tuple[str, bool]:
        """Why the worker died (exit code or signal) and whether that is retryable (a signal: the environment)."""
        worker.process.join(KILL_GRACE_S)
        code = worker.process.exitcode
        where = f" in {_phase(attempt.phase)}" if attempt is not None else ""
        if code is not None and code < 0:
            try:
                name = signal.Signals(-code).name
            except ValueError:
                name = f"signal {-code}"
            hint = " (perhaps the out-of-memory killer)" if -code == signal.SIGKILL else ""
            reason, retryable = f"its process was killed by {name}{hint}{where}", True
        else:
            reason, retryable = f"its process exited with code {code}{where}", False
        tail = _tail(worker.stderr_path, attempt.stderr_offset if attempt else 0, STDERR_LINES)
        if tail:
            reason += "; " + _gist(tail)
        return reason, retryable

    def _record(self, attempt: _Attempt, reason: str, worker: _Worker, retryable: bool) -> JobReport:
        """Record a job whose worker died or was stopped (see the module docstring, **Faults**) and report it."""
        from gibench.store.runs import RunStore

        job = attempt.job
        stderr = "\n".join(_tail(worker.stderr_path, attempt.stderr_offset, STDERR_LINES)) or None
        store = RunStore(self.runs_dir, repair=False)
        folder = store.job(job.hash)
        claim = Claim(store.claim_path(job.hash), self.options.claim_timeout_s, self.options.claim_heartbeat_s)
        held = claim.try_acquire()  # the dead worker's claim, taken over; False: another worker took the job already
        try:
            if attempt.phase.startswith("evaluating "):
                evaluations = self._record_evaluation(attempt, folder, reason, stderr, held)
                return JobReport(job, "trained" if attempt.trained else "cached", None, evaluations=evaluations)
            if held:
                folder.save_failed(reason, {}, stderr, retryable=retryable, finished=now())
                folder.record_event("failed", reason=reason.split(";")[0])
            suffix = "" if retryable else "; fix the cause, then rerun with --retry-failed"
            return JobReport(job, "failed", reason + suffix, traceback=stderr)
        finally:
            claim.release()

    def _record_evaluation(self, attempt: _Attempt, folder: Any, reason: str, stderr: str | None,
                           held: bool) -> list[EvaluationReport]:
        """The evaluations before the one that died as stored, and that one as a failed result."""
        from gibench.running.job_runner import _result_header
        from gibench.store.records import ResultRecord
        from gibench.store.runs import evaluation_key

        name = attempt.phase[len("evaluating "):]
        reports = []
        for spec in attempt.job.evaluators:
            evaluator = registry.evaluators.create(spec.name, **spec.params)
            key = evaluation_key(spec.name, evaluator.version, spec.config)
            stored = folder.result(key)
            if spec.name == name and not (stored is not None and stored.done):
                if held:
                    status = folder.status()
                    header = _result_header(spec, evaluator, status.checkpoint_sha256 if status else None)
                    text = reason + (f"\n{stderr}" if stderr else "")
                    folder.save_result(key, ResultRecord(**header, status="failed", reason=text))
                reports.append(EvaluationReport(spec.name, "failed", reason))
                break
            reports.append(EvaluationReport(spec.name, stored.status if stored is not None else "failed",
                                            stored.reason if stored is not None else None))
        return reports


def _stop(process: Any) -> None:
    """SIGTERM, then SIGKILL after :data:`KILL_GRACE_S`; waits for the process to end."""
    if process.is_alive():
        process.terminate()
        process.join(KILL_GRACE_S)
    if process.is_alive():
        process.kill()
        process.join()


def _phase(phase: str) -> str:
    return "training" if phase == "training" else phase.replace("evaluating ", "evaluation ", 1) \
        if phase.startswith("evaluating ") else "loading (before training)"


def _size(path: Path) -> int:
    try:
        return path.stat().st_size
    except OSError:
        return 0


def _tail(path: Path, offset: int, lines: int) -> list[str]:
    """The last ``lines`` non-empty lines written to ``path`` after ``offset`` (faulthandler's list of extension
    modules left out)."""
    try:
        with open(path, "rb") as handle:
            handle.seek(offset)
            text = handle.read().decode(errors="replace")
    except OSError:
        return []
    kept = [line.rstrip() for line in text.splitlines() if line.strip() and not line.startswith("Extension modules:")]
    return kept[-lines:]


def _gist(lines: list[str]) -> str:
    """What a failure's reason quotes of the standard error: for a fatal error (faulthandler) its first line and the
    innermost frame of the crashing thread, else the last :data:`REASON_LINES` lines."""
    fatal = next((line for line in lines if line.startswith("Fatal Python error")), None)
    current = next((i for i, line in enumerate(lines) if line.startswith("Current thread")), None)
    if current is not None and current + 1 < len(lines):
        quoted = [fatal] if fatal else []
        quoted.append(f"innermost frame:{lines[current + 1].strip().removeprefix('File')}")
    else:
        quoted = lines[-REASON_LINES:]
    return "last lines of its standard error: " + " | ".join(line[:300] for line in quoted)
