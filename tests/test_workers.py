"""``gibench run --workers N``: other worker processes share the suite through the runs directory, each job trained
once; their threads and GPUs; the options they are started with; bad uses refused; stopping them."""

from __future__ import annotations

import re
import subprocess
import sys
import time

import pytest

from gibench.cli import main
from gibench.cli.parser import _parser
from gibench.cli.workers import _stop, interruptible_popen, worker_argv, worker_environment


def test_each_worker_gets_its_share_of_the_cores_and_its_own_gpu():
    assert worker_environment(1, 2, {}, cores=8, gpus=0) == {"OMP_NUM_THREADS": "4"}
    assert worker_environment(3, 3, {"PATH": "/bin"}, cores=2, gpus=0) == {"PATH": "/bin", "OMP_NUM_THREADS": "1"}
    assert [worker_environment(i, 4, {}, cores=32, gpus=2)["CUDA_VISIBLE_DEVICES"] for i in (1, 2, 3, 4)] == [
        "0", "1", "0", "1"]
    # what the environment sets wins
    assert worker_environment(2, 2, {"OMP_NUM_THREADS": "3", "CUDA_VISIBLE_DEVICES": "5"}, cores=8, gpus=4) == {
        "OMP_NUM_THREADS": "3", "CUDA_VISIBLE_DEVICES": "5"}


def test_the_other_workers_run_the_same_suite_with_the_same_options():
    given = ["run", "--suite", "tuned", "--runs-dir", "r", "--data-root", "d", "--device", "cpu", "--download",
             "--retry-failed", "--eval-batch-size", "64", "--claim-timeout", "30", "--isolation", "process",
             "--job-timeout", "600", "--eval-timeout", "60.5", "--workers", "3"]
    args = _parser().parse_args(given)
    again = _parser().parse_args(worker_argv(args))
    assert again.workers == 1 and again.download is False  # the datasets are on disk when the others start
    assert {k: v for k, v in vars(again).items() if k not in ("workers", "download")} == {
        k: v for k, v in vars(args).items() if k not in ("workers", "download")}
    plain = _parser().parse_args(worker_argv(_parser().parse_args(["run", "--suite", "smoke", "--workers", "2"])))
    assert (plain.device, plain.data_root, plain.isolation, plain.download) == (None, None, None, False)


@pytest.mark.parametrize(("extra", "message"), [
    (["--workers", "0"], "--workers must be a whole number of at least 1, got 0"),
    (["--workers", "2", "--executor", "ray"], "with --executor ray the executor schedules the jobs itself"),
    (["--workers", "2", "--dry-run"], "--workers applies to a run that trains; --dry-run trains nothing"),
    (["--workers", "2", "--estimate"], "--estimate trains nothing"),
    (["--workers", "2", "--check"], "--check trains nothing"),
])
def test_workers_where_they_do_not_apply_are_an_error_that_says_so(tiny_suite_file, tmp_path, capsys, extra,
                                                                   message):
    assert main(["run", "--suite", str(tiny_suite_file), "--runs-dir", str(tmp_path / "runs"), "--device", "cpu",
                 *extra]) == 2
    assert message in " ".join(capsys.readouterr().err.split())
    assert not (tmp_path / "runs" / "logs").exists()  # no worker was started


def test_two_workers_share_a_suite_and_train_each_job_once(tiny_suite_file, tmp_path, capsys):
    runs = tmp_path / "runs"
    assert main(["run", "--suite", str(tiny_suite_file), "--runs-dir", str(runs), "--device", "cpu",
                 "--workers", "2"]) == 0
    here = capsys.readouterr().err
    log = (runs / "logs" / "worker-2.log").read_text()
    assert "1 more worker(s) share this run" in " ".join(here.split())
    trained = re.findall(r"\] (.+): trained in", here) + re.findall(r"\] (.+): trained in", log)
    assert sorted(trained) == ["mnist_subset / gibench_linear / erm / seed 0",
                               "mnist_subset / gibench_linear / gradient_norm(weight=0.001) / seed 0"]
    assert "leaderboard page:" in log  # the other worker ran to its end
    assert len(list(runs.glob("jobs/*/checkpoint.pt"))) == 2


def test_no_other_worker_starts_when_the_preflight_fails(tmp_path, capsys):
    """The others start once the suite has passed its preflight (every dataset on disk), never before."""
    from tests.conftest import write_suite

    suite = write_suite(tmp_path, datasets=["svhn"], regularizers=["erm"], evaluators=["accuracy"])
    (tmp_path / "data").mkdir()
    runs = tmp_path / "runs"
    assert main(["run", "--suite", str(suite), "--runs-dir", str(runs), "--device", "cpu", "--data-root",
                 str(tmp_path / "data"), "--workers", "2"]) == 2
    assert "not on disk" in " ".join(capsys.readouterr().err.split())
    assert not (runs / "logs" / "worker-2.log").exists()


def test_stopping_interrupts_the_workers_that_still_run_even_when_this_process_ignores_sigint():
    """A command started in the background of a shell (`nohup gibench run ... --workers 2 &`) ignores SIGINT, and its
    children would inherit that: the workers are started with SIGINT at its default, so the interrupt stops them."""
    import signal

    previous = signal.signal(signal.SIGINT, signal.SIG_IGN)
    try:
        sleeper = interruptible_popen([sys.executable, "-c", "import time; print('up', flush=True); time.sleep(60)"],
                                      stdout=subprocess.PIPE)
    finally:
        signal.signal(signal.SIGINT, previous)
    assert sleeper.stdout.readline().strip() == b"up"  # Python has installed its SIGINT handler by now
    done = subprocess.Popen([sys.executable, "-c", "pass"])
    done.wait()
    start = time.monotonic()
    _stop([sleeper, done])
    assert sleeper.returncode == -signal.SIGINT and time.monotonic() - start < 10  # interrupted, not killed
    assert done.returncode == 0


def test_a_worker_that_does_not_stop_when_interrupted_is_killed_after_the_grace_period(monkeypatch):
    import signal

    from gibench.cli import workers

    monkeypatch.setattr(workers, "_STOP_GRACE_S", 0.5)
    stubborn = interruptible_popen([sys.executable, "-c", "import signal, time; signal.signal(signal.SIGINT, "
                                    "signal.SIG_IGN); print('up', flush=True); time.sleep(60)"], stdout=subprocess.PIPE)
    assert stubborn.stdout.readline().strip() == b"up"
    _stop([stubborn])
    assert stubborn.returncode == -signal.SIGKILL  # killed, and reaped
