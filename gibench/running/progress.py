"""The terminal display of a run: a :class:`gibench.running.runner.RunObserver` that draws rich progress bars.

One bar for the suite, one for the job in flight (its steps while training, its phase in the description), and one
printed line per finished job: ``[3/8] mnist_subset / gibench_cnn / erm / seed 0: trained in 4.2s; accuracy done``.
Warnings (damaged files moved aside, preflight warnings) print as they come.

Off a terminal (a log file, a batch scheduler's output) no bar is drawn, and a job of a large suite can take hours
between two finished-job lines; there each phase that does work (training, each evaluation that runs) also prints a
line as it starts, with the wall-clock time and the seconds since the job began:
``[3/8] mnist_subset / gibench_cnn / erm / seed 0: evaluating gan_test (18:42:07, 31 s into the job)``.
"""

from __future__ import annotations

__all__ = [
    "RichProgress", "job_line",
]

import time

from rich.console import Console
from rich.markup import escape
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn

from gibench.running.job_runner import EvaluationReport, JobReport
from gibench.running.options import RunObserver


class RichProgress(RunObserver):
    """Use as a context manager around ``run_suite(..., observer=display)``. ``phase_lines`` prints a line per phase
    (default: when ``console`` is not a terminal, where no bar shows the phase)."""

    def __init__(self, console: Console, *, phase_lines: bool | None = None) -> None:
        self.console = console
        self.phase_lines = not console.is_terminal if phase_lines is None else phase_lines
        self._started: dict[str, float] = {}  # job hash -> time.monotonic() at job_started
        columns = (TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(),
                   TextColumn("ETA"), TimeRemainingColumn())
        self.progress = Progress(*columns, console=console, transient=True)
        self._overall = None
        self._tasks: dict[str, tuple[int, str]] = {}  # job hash -> (task id, "[n/N] label")
        self._numbers: dict[str, tuple[int, int]] = {}
        self._total = 0  # jobs in the run so far (a suite that selects adds its scored jobs as units are decided)

    def __enter__(self) -> RichProgress:
        self.progress.__enter__()
        return self

    def __exit__(self, *exc) -> None:
        self.progress.__exit__(*exc)

    def suite_started(self, suite, jobs) -> None:
        if self._overall is not None:  # a second suite on one display
            self.progress.remove_task(self._overall)
        self._total = len(jobs)
        self._overall = self.progress.add_task(escape(f"suite {suite.name}"), total=self._total)

    def jobs_added(self, jobs) -> None:
        self._total += len(jobs)
        if self._overall is not None:
            self.progress.update(self._overall, total=self._total)

    def selection_made(self, selection) -> None:
        for unit in selection.units:
            chosen = "" if unit.selected is None else f"{unit.parameter} = {unit.selected:g}: "
            self.console.print(escape(f"selected {unit.unit.dataset} / {unit.unit.backbone} / {unit.unit.regularizer}"
                                      f": {chosen}{unit.state} ({unit.reason})"))

    def job_started(self, job, number, total) -> None:
        prefix = f"[{number}/{total}] {job.label}"
        self._numbers[job.hash] = (number, total)
        self._started[job.hash] = time.monotonic()
        self._tasks[job.hash] = (self.progress.add_task(escape(prefix), total=None), prefix)

    def job_step(self, job, done, total) -> None:
        if job.hash in self._tasks:
            self.progress.update(self._tasks[job.hash][0], completed=done, total=total)

    def job_phase(self, job, phase) -> None:
        if job.hash in self._tasks:
            task, prefix = self._tasks[job.hash]
            self.progress.update(task, description=escape(f"{prefix}: {phase}"))
            if self.phase_lines:
                into = time.monotonic() - self._started.get(job.hash, time.monotonic())
                self.console.print(escape(f"{prefix}: {phase} ({time.strftime('%H:%M:%S')}, {into:.0f} s into the "
                                          "job)"), soft_wrap=True)

    def job_finished(self, report: JobReport) -> None:
        task = self._tasks.pop(report.job.hash, None)
        self._started.pop(report.job.hash, None)
        if task is not None:
            self.progress.remove_task(task[0])
        number, total = self._numbers.get(report.job.hash, (0, 0))
        if self._overall is not None and report.state != "busy":
            self.progress.advance(self._overall)
        self.console.print(job_line(number, total, report))

    def warning(self, message: str) -> None:
        self.console.print(f"[yellow]warning:[/] {escape(message)}")


def job_line(number: int, total: int, report: JobReport) -> str:
    training = {"cached": "[cyan]cached[/]", "trained": f"[green]trained[/] in {report.seconds:.1f}s",
                "failed": f"[red]failed[/]: {escape(report.reason or '')}",
                "busy": f"[yellow]busy[/]: {escape(report.reason or '')}; looked at again later"}[report.state]
    evals = ", ".join(f"{e.evaluator} {_eval_word(e)}" for e in report.evaluations)
    return escape(f"[{number}/{total}] {report.job.label}") + f": {training}" + (f"; {evals}" if evals else "")


def _eval_word(e: EvaluationReport) -> str:
    word = {"cached": "[cyan]cached[/]", "ok": "[green]done[/]", "skipped": "[yellow]skipped[/]",
            "failed": "[red]FAILED[/]"}[e.state]
    if e.oom_steps:
        word += f" (out of memory at batch size {', '.join(map(str, e.oom_steps))}; ran at {e.eval_batch_size})"
    return word
