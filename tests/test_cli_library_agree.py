"""``gibench run`` and the library agree: every option of the command is an argument of
:func:`gibench.running.runner.run_suite` (or a field of the :class:`RunOptions` it takes) with the same default, and a
bad value gives the same error message from both sides, because both call the same validation
(``RunOptions.__post_init__``, ``check_executor_options``, the preflight).

The options are read from the parser that ``gibench`` itself builds, never listed here, so an option added to the
command without its library argument fails :func:`test_every_run_option_is_a_library_argument_with_its_default`.
"""

from __future__ import annotations

import argparse
import dataclasses
import inspect
import io
from pathlib import Path

import pytest
from rich.console import Console

from gibench.cli import _shared, main
from gibench.cli.parser import _parser
from gibench.core.errors import ConfigError, GibenchError
from gibench.running import ray_executor
from gibench.running.runner import JobReport, RunOptions, run_suite
from gibench.suites.jobs import expand
from gibench.suites.suite import load_suite
from tests.conftest import write_suite

#: The options of ``gibench run`` that are not an argument of ``run_suite`` with the same default, and why: each only
#: concerns the terminal.
CLI_ONLY = {
    "suite": "text (a shipped suite's name or a YAML path) that the command turns into a Suite with load_suite; "
             "run_suite takes that Suite, as its required first argument",
    "runs_dir": "its default, 'runs', is a folder relative to the terminal's working directory; run_suite takes no "
                "implicit folder, so runs_dir is its required second argument",
    "check": "runs `gibench doctor` on --runs-dir instead of a run (the library's is gibench.store.doctor)",
    "estimate": "prints the estimated device-hours instead of a run (the library's is "
                "gibench.running.estimate.estimate_suite)",
    "throughput": "prices --estimate's passes (the library's is estimate_suite's throughput argument)",
    "workers": "starts other `gibench run` processes beside this one (gibench/cli/workers.py); with the library, "
               "call run_suite in several processes on one runs_dir",
}

#: The options whose every value is valid, and why; every other option has a case in ``BAD_VALUES``.
NOTHING_TO_REJECT = {
    "download": "a flag: True or False",
    "retry_failed": "a flag: True or False",
    "dry_run": "a flag: True or False",
    "check": "CLI-only (see CLI_ONLY), a flag",
    "estimate": "CLI-only (see CLI_ONLY), a flag",
    "throughput": "CLI-only (see CLI_ONLY), no run_suite argument to compare with: a bad value is the ConfigError of "
                  "gibench.running.estimate.check_throughput, which estimate_suite raises too (tests/test_passes.py)",
    "suite": "CLI-only (see CLI_ONLY): a bad name or file is load_suite's error, which the command calls as the "
             "library does",
    "workers": "CLI-only (see CLI_ONLY), no run_suite argument to compare with: its bad values are the ConfigErrors "
               "of gibench.cli.workers.check_workers (tests/test_workers.py)",
}


def _run_parser() -> argparse.ArgumentParser:
    commands = next(a for a in _parser()._actions if isinstance(a, argparse._SubParsersAction))
    return commands.choices["run"]


def _run_options() -> list[argparse.Action]:
    return [a for a in _run_parser()._actions if not isinstance(a, argparse._HelpAction)]


def _library_arguments() -> dict[str, object]:
    """Every argument of run_suite and every RunOptions field (run_suite passes ``**option_fields`` to RunOptions),
    with its default (``inspect.Parameter.empty`` when required)."""
    parameters = {name: p.default for name, p in inspect.signature(run_suite).parameters.items()
                  if p.kind not in (inspect.Parameter.VAR_KEYWORD, inspect.Parameter.VAR_POSITIONAL)}
    fields = {f.name: f.default for f in dataclasses.fields(RunOptions)}
    assert not set(parameters) & set(fields), "a RunOptions field and a run_suite argument share a name"
    return {**parameters, **fields}


@pytest.mark.parametrize("action", _run_options(), ids=lambda action: action.option_strings[0])
def test_every_run_option_is_a_library_argument_with_its_default(action):
    library = _library_arguments()
    if action.dest in CLI_ONLY:  # absent from the library, or a required argument there: no default to disagree on
        assert library.get(action.dest, "absent") in ("absent", inspect.Parameter.empty), action.option_strings[0]
        return
    assert action.dest in library, f"{action.option_strings[0]} is no argument of run_suite nor a RunOptions field"
    cli_default = inspect.Parameter.empty if action.required else action.default
    assert library[action.dest] == cli_default, action.option_strings[0]
    assert type(library[action.dest]) is type(cli_default), action.option_strings[0]


def test_the_cli_only_and_never_invalid_options_are_options_of_gibench_run():
    dests = {action.dest for action in _run_options()}
    assert set(CLI_ONLY) <= dests and set(NOTHING_TO_REJECT) <= dests
    assert {"address", "gpus_per_job", "executor", "claim_timeout_s"} <= dests - set(CLI_ONLY)
    assert list(inspect.signature(run_suite).parameters)[:2] == ["suite", "runs_dir"]  # --suite's and --runs-dir's


def _runs_dir_is_a_file(tmp_path: Path) -> None:
    (tmp_path / "runs").write_text("not a folder")


def _no_svhn_under_the_data_root(tmp_path: Path) -> None:
    (tmp_path / "data").mkdir()
    write_suite(tmp_path, datasets=["svhn"], regularizers=["erm"], evaluators=["accuracy"])


# (id, the options' names, gibench run's arguments, run_suite's keyword arguments, what to prepare in tmp_path)
BAD_VALUES = [
    ("eval-batch-size-0", {"eval_batch_size"}, ["--eval-batch-size", "0"], {"eval_batch_size": 0}, None),
    ("eval-batch-size-negative", {"eval_batch_size"}, ["--eval-batch-size", "-5"], {"eval_batch_size": -5}, None),
    ("claim-timeout-negative", {"claim_timeout_s"}, ["--claim-timeout", "-1"], {"claim_timeout_s": -1.0}, None),
    ("claim-timeout-0", {"claim_timeout_s"}, ["--claim-timeout", "0"], {"claim_timeout_s": 0.0}, None),
    ("claim-timeout-nan", {"claim_timeout_s"}, ["--claim-timeout", "nan"], {"claim_timeout_s": float("nan")}, None),
    ("device-tpu", {"device"}, ["--device", "tpu"], {"device": "tpu"}, None),
    ("isolation-thread", {"isolation"}, ["--isolation", "thread"], {"isolation": "thread"}, None),
    ("job-timeout-0", {"job_timeout_s"}, ["--job-timeout", "0"], {"job_timeout_s": 0.0}, None),
    ("job-timeout-inf", {"job_timeout_s"}, ["--job-timeout", "inf"], {"job_timeout_s": float("inf")}, None),
    ("eval-timeout-negative", {"eval_timeout_s"}, ["--eval-timeout", "-3"], {"eval_timeout_s": -3.0}, None),
    ("device-cuda-minus-1", {"device"}, ["--device", "cuda:-1"], {"device": "cuda:-1"}, None),
    ("executor-slurm", {"executor"}, ["--executor", "slurm"], {"executor": "slurm"}, None),
    ("address-local", {"address"}, ["--address", "10.0.0.1:6379"], {"address": "10.0.0.1:6379"}, None),
    ("gpus-per-job-local", {"gpus_per_job"}, ["--gpus-per-job", "0.5"], {"gpus_per_job": 0.5}, None),
    ("gpus-per-job-negative", {"gpus_per_job"}, ["--executor", "ray", "--gpus-per-job", "-1"],
     {"executor": "ray", "gpus_per_job": -1.0}, None),
    ("gpus-per-job-1.5", {"gpus_per_job"}, ["--executor", "ray", "--gpus-per-job", "1.5"],
     {"executor": "ray", "gpus_per_job": 1.5}, None),
    ("gpus-per-job-inf", {"gpus_per_job"}, ["--executor", "ray", "--gpus-per-job", "inf"],
     {"executor": "ray", "gpus_per_job": float("inf")}, None),
    ("gpus-per-job-with-device-cpu", {"gpus_per_job", "device"},
     ["--executor", "ray", "--device", "cpu", "--gpus-per-job", "1"],
     {"executor": "ray", "device": "cpu", "gpus_per_job": 1.0}, None),
    ("no-gpus-per-job-with-device-cuda", {"gpus_per_job", "device"},
     ["--executor", "ray", "--device", "cuda", "--gpus-per-job", "0"],
     {"executor": "ray", "device": "cuda", "gpus_per_job": 0.0}, None),
    ("runs-dir-a-file", {"runs_dir"}, ["--device", "cpu"], {"device": "cpu"}, _runs_dir_is_a_file),
    ("data-root-without-the-dataset", {"data_root"}, ["--device", "cpu", "--data-root", "DATA"],
     {"device": "cpu", "data_root": "DATA"}, _no_svhn_under_the_data_root),
]


def test_every_option_that_can_be_invalid_has_a_bad_value_case():
    covered = set().union(*(names for _, names, *_ in BAD_VALUES))
    assert covered | set(NOTHING_TO_REJECT) == {action.dest for action in _run_options()}


@pytest.fixture
def stderr_text(monkeypatch):
    """What the commands print to stderr, unwrapped and without colour codes."""
    buffer = io.StringIO()
    monkeypatch.setattr(_shared, "stderr", Console(file=buffer, width=100_000, color_system=None, highlight=False))
    return buffer


@pytest.mark.parametrize(("names", "argv", "kwargs", "prepare"), [case[1:] for case in BAD_VALUES],
                         ids=[case[0] for case in BAD_VALUES])
def test_a_bad_value_is_the_same_error_from_the_cli_and_the_library(tiny_suite_file, tmp_path, stderr_text,
                                                                     names, argv, kwargs, prepare):
    if prepare:
        prepare(tmp_path)
    suite_file = tmp_path / "suite.yaml" if (tmp_path / "suite.yaml").exists() else tiny_suite_file
    runs, data = tmp_path / "runs", tmp_path / "data"
    argv = [str(data) if arg == "DATA" else arg for arg in argv]
    kwargs = {name: data if value == "DATA" else value for name, value in kwargs.items()}
    existed = runs.exists()

    with pytest.raises(GibenchError) as caught:
        run_suite(load_suite(suite_file), runs, **kwargs)
    assert main(["run", "--suite", str(suite_file), "--runs-dir", str(runs), *argv]) == 2

    message = str(caught.value)
    printed = stderr_text.getvalue()
    assert printed.endswith(f"error: {message}\n") and "Traceback" not in printed
    flags = {"claim_timeout_s": "--claim-timeout", "job_timeout_s": "--job-timeout", "eval_timeout_s": "--eval-timeout"}
    assert any(flags.get(name, "--" + name.replace("_", "-")) in message for name in names), message
    if prepare is None:  # refused before the preflight, which creates the runs directory to probe it
        assert not runs.exists()
    else:
        assert runs.is_file() if existed else not any(runs.iterdir())  # nothing was written


def test_the_messages_name_the_option_and_the_fix(tiny_suite_file, tmp_path):
    with pytest.raises(ConfigError) as caught:
        RunOptions(claim_timeout_s=-1.0)
    assert str(caught.value) == ("--claim-timeout must be a positive number of seconds (how long another host's "
                                 "claim on a job may go without a heartbeat before it is taken over; default 120), "
                                 "got -1.")
    with pytest.raises(ConfigError) as caught:
        run_suite(load_suite(tiny_suite_file), tmp_path / "runs", gpus_per_job=0.5)
    assert str(caught.value) == ("--address and --gpus-per-job apply to --executor ray only, got --gpus-per-job 0.5 "
                                 "with --executor local. Pass --executor ray, or leave them out.")


@pytest.mark.parametrize(("kwargs", "message"), [
    ({"address": "10.0.0.1:6379", "executor_options": {"address": "10.0.0.2:6379"}},
     "address is given twice, as an argument of run_suite and in executor_options; give it once."),
    ({"executor_options": {"num_gpus": 1}},
     "executor_options: 'num_gpus' is not an option of the Ray executor; it takes address, gpus_per_job, "
     "cpus_per_job."),
    ({"executor_options": {"cpus_per_job": -2}},
     "executor_options: cpus_per_job must be a number >= 0 (CPU cores Ray reserves per job), got -2."),
    ({"address": 6379}, "--address must be a Ray cluster address such as HOST:PORT, got 6379."),
    ({"gpus_per_job": True}, "--gpus-per-job must be 0 (CPU tasks) or a positive number (e.g. 0.25 or 1), got True."),
])
def test_library_only_mistakes_in_the_ray_options_are_clear_errors(tiny_suite_file, tmp_path, kwargs, message):
    with pytest.raises(ConfigError) as caught:
        run_suite(load_suite(tiny_suite_file), tmp_path / "runs", executor="ray", **kwargs)
    assert str(caught.value) == message
    assert not (tmp_path / "runs").exists()


# -- the Ray options reach the executor ----------------------------------------------------------------------------


@pytest.fixture
def recorded_run_jobs(monkeypatch):
    """Replace the Ray executor's entry point by one that records its arguments and reports every job cached, so that
    no Ray cluster starts."""
    pytest.importorskip("ray")  # run_suite checks that Ray is installed before it calls the executor
    calls = []

    def run_jobs(jobs, runs_dir, options, observer=None, **kwargs):
        calls.append({"jobs": [job.hash for job in jobs], "runs_dir": runs_dir, "options": options, **kwargs})
        return [JobReport(job, "cached") for job in jobs]

    monkeypatch.setattr(ray_executor, "run_jobs", run_jobs)
    return calls


@pytest.mark.parametrize(("kwargs", "expected"), [
    ({"address": "10.0.0.1:6379", "gpus_per_job": 0.5}, {"address": "10.0.0.1:6379", "gpus_per_job": 0.5}),
    ({"gpus_per_job": 2}, {"gpus_per_job": 2.0}),
    ({"gpus_per_job": 0, "executor_options": {"cpus_per_job": 2}}, {"gpus_per_job": 0.0, "cpus_per_job": 2}),
    ({}, {}),  # nothing given: run_jobs' own defaults (Ray's address rule, GPUs by the cluster)
])
def test_run_suite_passes_the_ray_options_to_the_executor(tiny_suite_file, tmp_path, recorded_run_jobs, kwargs,
                                                         expected):
    import ray

    suite = load_suite(tiny_suite_file)
    summary = run_suite(suite, tmp_path / "runs", executor="ray", claim_timeout_s=30.0, **kwargs)
    [call] = recorded_run_jobs
    assert call["jobs"] == [job.hash for job in expand(suite)] and call["runs_dir"] == tmp_path / "runs"
    assert call["options"].claim_timeout_s == 30.0
    passed = {k: v for k, v in call.items() if k not in ("jobs", "runs_dir", "options")}
    assert passed == expected and {k: type(v) for k, v in passed.items()} == {k: type(v) for k, v in expected.items()}
    assert [r.state for r in summary.jobs] == ["cached", "cached"] and not ray.is_initialized()


def test_a_suite_that_selects_gives_the_ray_executor_its_scored_jobs_through_more(tmp_path, recorded_run_jobs):
    """The executor gets the sweep, and ``more()`` gives the scored jobs once the sweep is stored (here the recording
    executor stores nothing, so every unit is still pending and ``more()`` has only erm's scored jobs)."""
    from gibench.suites.jobs import sweep_jobs
    from gibench.suites.suite import parse_suite

    suite = parse_suite({"name": "select-agree", "datasets": ["mnist_subset"], "backbones": ["gibench_linear"],
                         "regularizers": ["erm", "gradient_norm"], "evaluators": ["accuracy"], "seeds": [0],
                         "sweep": {"seeds": [0], "values": {"gradient_norm": [0.001, 0.1]}},
                         "select": {"rule": "max_drop", "max_drop": 0.05}})
    run_suite(suite, tmp_path / "runs", executor="ray")
    [call] = recorded_run_jobs
    assert call["jobs"] == [job.hash for job in sweep_jobs(suite)]
    scored = call["more"]()
    assert [(job.regularizer.name, job.seed) for job in scored] == [("erm", 0)] and call["more"]() == []


def test_gibench_run_passes_address_and_gpus_per_job_to_the_executor(tiny_suite_file, tmp_path, recorded_run_jobs,
                                                                     stderr_text):
    runs = tmp_path / "runs"
    assert main(["run", "--suite", str(tiny_suite_file), "--runs-dir", str(runs), "--executor", "ray",
                 "--address", "10.0.0.1:6379", "--gpus-per-job", "0.25", "--claim-timeout", "30"]) == 0
    [call] = recorded_run_jobs
    assert (call["address"], call["gpus_per_job"], call["options"].claim_timeout_s) == ("10.0.0.1:6379", 0.25, 30.0)
    assert call["options"] == RunOptions(claim_timeout_s=30.0)


def test_the_facade_run_suite_takes_the_ray_options_too(tiny_suite_file, tmp_path, recorded_run_jobs):
    import gibench

    gibench.run_suite(str(tiny_suite_file), tmp_path / "runs", executor="ray", address="auto", gpus_per_job=0.5)
    [call] = recorded_run_jobs
    assert (call["address"], call["gpus_per_job"]) == ("auto", 0.5)


def test_the_download_command_the_preflight_suggests_keeps_the_ray_options(tiny_suite_file, tmp_path):
    from gibench.running.preflight import rerun_command

    command = rerun_command(load_suite(tiny_suite_file), tmp_path / "runs", RunOptions(eval_batch_size=64), "ray",
                            "--download", ray_options={"address": "10.0.0.1:6379", "gpus_per_job": 0.5})
    assert command.endswith("--eval-batch-size 64 --executor ray --address 10.0.0.1:6379 --gpus-per-job 0.5 "
                            "--download")
