"""The Ray executor on a real local Ray cluster (CPU only, started once for the module).

The cluster declares one *logical* GPU (``num_gpus=1`` on a machine without CUDA), so the GPU code path runs for real:
fractional ``num_gpus`` packing, a fresh worker per GPU task, ``CUDA_VISIBLE_DEVICES`` from Ray, and the fall-back to
the CPU. Test plugins reach the Ray workers through ``worker_process_setup_hook`` (it registers them in each worker's
registry), and training waits on sentinel files instead of on timings.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
import time
from dataclasses import dataclass
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F

from gibench.api import registry
from gibench.api.plugin import Regularizer, TrainingLoss
from gibench.core.errors import ConfigError
from gibench.results.tables import collect_results
from gibench.running.runner import RunObserver, RunOptions, run_suite
from gibench.suites.jobs import expand
from gibench.suites.suite import load_suite
from tests.conftest import write_suite

REPO_ROOT = Path(__file__).resolve().parents[1]
# A safety net against a hung test; nothing waits on a timing. Starting a Ray driver and its workers on two loaded
# cores once took over 300 s (CI beside a `gibench run`), so the net is wide, and the tests that start a driver
# get a pytest timeout above it (the default 600 s applies to every other test).
WAIT_LIMIT_S = 600


# -- a regularizer that shows how often it trained, and can wait -----------------------------------------------------


@dataclass(frozen=True)
class CountedConfig:
    folder: str = ""  # gets one "<pid>" line per training start, in the file "starts"
    wait: bool = False  # the first step waits until the file "sentinel" exists in folder


class CountedERM(Regularizer):
    """``erm`` (the same loss and numbers) that records every training start and can wait on a sentinel file."""

    Config = CountedConfig
    zero_strength = None

    def __init__(self, config=None) -> None:
        super().__init__(config)
        self._started = False

    def training_loss(self, model, x, y):
        if not self._started:
            self._started = True
            folder = Path(self.config.folder)
            with open(folder / "starts", "a") as handle:  # pid, device, and the GPUs Ray made visible
                handle.write(f"{os.getpid()} {x.device} {os.environ.get('CUDA_VISIBLE_DEVICES', '-')}\n")
            deadline = time.monotonic() + WAIT_LIMIT_S
            while self.config.wait and not (folder / "sentinel").exists() and time.monotonic() < deadline:
                time.sleep(0.05)
        ce = F.cross_entropy(model(x), y)
        return TrainingLoss(total=ce, parts={"cross_entropy": ce.detach()})


def register_test_plugins() -> None:
    """Ray's worker_process_setup_hook (and the drivers): make ``counted`` known to this process's registry."""
    if "counted" not in registry.regularizers.names():
        registry.regularizers.register("counted", CountedERM)


def start_lines(folder: Path) -> list[list[str]]:
    path = folder / "starts"
    return [line.split() for line in path.read_text().splitlines()] if path.exists() else []


def starts(folder: Path) -> list[int]:
    """The pid of every training start of the job that writes into ``folder``."""
    return [int(line[0]) for line in start_lines(folder)]


def wait_for(condition, what: str) -> None:
    deadline = time.monotonic() + WAIT_LIMIT_S
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"gave up waiting for {what}")
        time.sleep(0.05)


# -- the rules, without a cluster ------------------------------------------------------------------------------------


@pytest.mark.slow
def test_importing_gibench_never_imports_ray():
    code = ("import sys, gibench, gibench.running.runner, gibench.cli, gibench.running.ray_executor; "
            "print('ray' in sys.modules)")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert done.stdout.strip() == "False"


def test_missing_ray_names_the_extra(monkeypatch):
    from gibench.running.ray_executor import import_ray

    monkeypatch.setitem(sys.modules, "ray", None)  # what an environment without Ray looks like to `import ray`
    with pytest.raises(ConfigError, match=r"pip install 'gibench\[ray\]'"):
        import_ray()


@pytest.mark.parametrize(("requested", "nodes", "device", "expected"), [
    (None, [8.0, 4.0], None, 1.0),  # one GPU per job on a GPU cluster
    (None, [0.0], None, 0.0),  # CPU-only cluster
    (None, [8.0], "cpu", 0.0),  # --device cpu reserves no GPU
    (0.25, [1.0], "cuda", 0.25),  # four jobs per GPU
    (2, [4.0], None, 2.0),
])
def test_gpus_per_job(requested, nodes, device, expected):
    from gibench.running.ray_executor import resolve_gpus_per_job

    assert resolve_gpus_per_job(requested, nodes, device) == expected


@pytest.mark.parametrize(("requested", "nodes", "device", "message"), [
    (-1, [1.0], None, r"must be 0 \(CPU tasks\) or a positive number .*got -1\."),
    (float("nan"), [1.0], None, r"must be 0 \(CPU tasks\) or a positive number .*got nan\."),
    (1.5, [4.0], None, "not a fraction above 1"),
    (0.5, [0.0], None, "the cluster has no GPUs"),
    (4, [2.0, 2.0], None, "the largest node has 2"),
    (0.5, [1.0], "cpu", "--device cpu would not use"),
    (0, [1.0], "cuda", "Ray would give the jobs no GPU"),
    (None, [0.0], "cuda:1", "the Ray cluster has no GPUs"),
])
def test_gpus_per_job_that_ray_could_never_schedule(requested, nodes, device, message):
    from gibench.running.ray_executor import resolve_gpus_per_job

    with pytest.raises(ConfigError, match=message):
        resolve_gpus_per_job(requested, nodes, device)


@pytest.mark.parametrize(("requested", "gpu_ids", "cuda", "visible", "expected"), [
    (None, ["3"], True, "3", "cuda:0"),  # Ray narrowed CUDA_VISIBLE_DEVICES to the task's GPU
    (None, ["3"], True, "2,3", "cuda:1"),  # a task given a GPU of a wider visible set
    (None, ["1"], True, None, "cuda:1"),
    (None, [], True, "0,1", "cpu"),  # no GPU from Ray: never use one someone else reserved
    (None, ["0"], False, "0", "cpu"),  # logical GPU on a machine without CUDA
    ("cuda", ["0"], False, "0", "cuda"),  # explicit cuda there: run_job fails the job, saying so
    ("cpu", ["0"], True, "0", "cpu"),
])
def test_task_device(requested, gpu_ids, cuda, visible, expected):
    from gibench.running.ray_executor import task_device

    assert task_device(requested, gpu_ids, cuda, visible) == expected


def test_a_worker_that_cannot_see_the_runs_directory_says_so(tmp_path):
    from gibench.running.ray_executor import Marker, check_marker, visibility_marker

    with visibility_marker(tmp_path / "runs") as marker:
        check_marker(marker)  # the driver's own view passes
        other_copy = Marker(marker.path, "another token")
        with pytest.raises(ConfigError, match=r"runs directory .*runs is not the driver's on Ray node .*shared"):
            check_marker(other_copy)
    assert not marker.path.exists()
    with pytest.raises(ConfigError, match=r"no file \.ray-visible-"):
        check_marker(marker)


def test_an_unreachable_address_is_a_clear_error():
    ray = pytest.importorskip("ray")
    if ray.is_initialized():
        pytest.skip("a Ray session is open in this process")
    from gibench.running.ray_executor import ray_session

    with pytest.raises(ConfigError, match=r"Ray cluster at '127.0.0.1:1': nothing answers there.*ray start --head"):
        with ray_session(ray, "127.0.0.1:1"):
            pass


# -- the cluster ---------------------------------------------------------------------------------------------------


def runtime_env() -> dict:
    """Every Ray worker of a test driver registers the test plugins and finds this repository's ``tests``."""
    path = os.pathsep.join(filter(None, [str(REPO_ROOT), os.environ.get("PYTHONPATH")]))
    return {"worker_process_setup_hook": "tests.test_ray_executor.register_test_plugins",
            "env_vars": {"PYTHONPATH": path, "OMP_NUM_THREADS": "1"}}


@pytest.fixture(scope="module")
def ray_cluster():
    ray = pytest.importorskip("ray")
    context = ray.init(num_cpus=2, num_gpus=1, include_dashboard=False, runtime_env=runtime_env())
    register_test_plugins()
    yield context
    ray.shutdown()
    registry.regularizers._discover().pop("counted", None)
    registry.regularizers._loaded.pop("counted", None)


class Recorder(RunObserver):
    """Every event with the thread it arrived in."""

    def __init__(self) -> None:
        self.events: list[tuple] = []

    def job_started(self, job, number, total):
        self.events.append(("started", job.hash, threading.get_ident()))

    def job_step(self, job, done, total):
        self.events.append(("step", job.hash, done, total))

    def job_phase(self, job, phase):
        self.events.append(("phase", job.hash, phase))

    def job_finished(self, report):
        self.events.append(("finished", report.job.hash, report.state, threading.get_ident()))

    def of(self, kind: str, job_hash: str) -> list[tuple]:
        return [e for e in self.events if e[0] == kind and e[1] == job_hash]


def counted_suite(tmp_path: Path, names: list[str], wait: str | None = None, **changes) -> Path:
    folders = {name: tmp_path / name for name in names}
    for folder in folders.values():
        folder.mkdir()
    regularizers = [{"counted": {"folder": str(folder), "wait": name == wait}} for name, folder in folders.items()]
    return write_suite(tmp_path, regularizers=regularizers, **changes)


def result_values(runs: Path):
    frame = collect_results(runs)
    return frame[["job_hash", "evaluator", "metric", "value"]].sort_values(["job_hash", "evaluator", "metric"]) \
        .reset_index(drop=True)


# -- the tests -----------------------------------------------------------------------------------------------------


@pytest.mark.ray
@pytest.mark.timeout(1500)
@pytest.mark.slow
def test_killed_worker_costs_only_its_job_and_results_equal_the_local_executor(ray_cluster, tmp_path):
    suite = load_suite(counted_suite(tmp_path, ["a", "b", "killed"], wait="killed"))
    runs, killed = tmp_path / "runs", tmp_path / "killed"

    def kill_the_waiting_worker():
        wait_for(lambda: len(starts(killed)) == 1, "the job to start training")
        os.kill(starts(killed)[0], signal.SIGKILL)
        wait_for(lambda: len(starts(killed)) == 2, "Ray to retry the job")
        (killed / "sentinel").touch()

    killer = threading.Thread(target=kill_the_waiting_worker, daemon=True)
    killer.start()
    recorder = Recorder()
    summary = run_suite(suite, runs, options=RunOptions(device="cpu"), observer=recorder, executor="ray")
    killer.join(timeout=5)

    assert [r.state for r in summary.jobs] == ["trained", "trained", "trained"]
    assert [len(starts(tmp_path / name)) for name in ("a", "b", "killed")] == [1, 1, 2]
    # --device cpu: no GPU reserved (the cluster has a logical one), so Ray left CUDA_VISIBLE_DEVICES alone
    assert {tuple(line[1:]) for name in ("a", "b", "killed") for line in start_lines(tmp_path / name)} == {("cpu", "-")}
    for job in expand(suite):  # each job committed once, with every result
        folder = runs / "jobs" / job.hash
        assert (folder / "checkpoint.pt").exists() and "trained" in (folder / "status.json").read_text()
        assert len(list((folder / "results").glob("*.json"))) == 2
    main = threading.get_ident()
    for job in expand(suite):  # progress reached the driver, in its own thread, once per job
        assert [e[3] for e in recorder.of("finished", job.hash)] == [main]
        assert [e[2] for e in recorder.of("started", job.hash)] == [main]
        steps = recorder.of("step", job.hash)
        assert steps and steps[-1][2] == steps[-1][3]
        assert ("phase", job.hash, "evaluating accuracy") in recorder.events
    killed_hash = expand(suite)[2].hash
    assert any("restarted" in e[2] for e in recorder.of("phase", killed_hash))

    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # as the Ray workers (OMP_NUM_THREADS=1): the same thread count gives the same numbers
    try:
        local = run_suite(suite, tmp_path / "local", options=RunOptions(device="cpu"))
    finally:
        torch.set_num_threads(threads)
    assert [r.state for r in local.jobs] == ["trained", "trained", "trained"]
    assert result_values(runs).equals(result_values(tmp_path / "local"))
    for job in expand(suite):
        ours = torch.load(runs / "jobs" / job.hash / "checkpoint.pt", weights_only=True)
        theirs = torch.load(tmp_path / "local" / "jobs" / job.hash / "checkpoint.pt", weights_only=True)
        assert all(torch.equal(ours[k], theirs[k]) for k in ours)


@pytest.mark.ray
@pytest.mark.timeout(1500)
@pytest.mark.slow
def test_a_job_another_process_holds_is_resubmitted_until_it_is_free(ray_cluster, tmp_path):
    from gibench.core.fsio import Claim
    from gibench.store.runs import RunStore

    suite = load_suite(counted_suite(tmp_path, ["held"]))
    (job,) = expand(suite)
    runs = tmp_path / "runs"
    claim = Claim(RunStore(runs).claim_path(job.hash), timeout_s=300, heartbeat_s=30)
    assert claim.try_acquire()  # this process holds the job, as another `gibench run` on the same store would

    class ReleasesOnceToldBusy(Recorder):
        def job_finished(self, report):
            super().job_finished(report)
            if report.state == "busy":
                claim.release()

    recorder = ReleasesOnceToldBusy()
    summary = run_suite(suite, runs, options=RunOptions(device="cpu", claim_poll_s=0.2), observer=recorder,
                        executor="ray")
    assert [r.state for r in summary.jobs] == ["trained"]
    assert len(starts(tmp_path / "held")) == 1
    # as the local executor shows it: started, busy; then started again once it runs, and trained
    assert [e[0] for e in recorder.events if e[0] in ("started", "finished")] == ["started", "finished", "started",
                                                                                  "finished"]
    assert [e[2] for e in recorder.of("finished", job.hash)] == ["busy", "trained"]


DRIVER = """
import sys, ray
sys.path.insert(0, {repo!r})
from tests.test_ray_executor import register_test_plugins, runtime_env
from gibench.suites.suite import load_suite
from gibench.running.runner import RunOptions, run_suite
register_test_plugins()
ray.init(address={address!r}, runtime_env=runtime_env())
run_suite(load_suite({suite!r}), {runs!r}, options=RunOptions(), executor="ray",
          executor_options={{"gpus_per_job": 0.5}})
"""


@pytest.mark.ray
@pytest.mark.timeout(1500)
@pytest.mark.slow
def test_a_killed_driver_resumes_from_the_store_and_its_workers_release_their_claims(ray_cluster, tmp_path):
    suite_file = counted_suite(tmp_path, ["done", "busy"], wait="busy")
    runs, done, busy = tmp_path / "runs", tmp_path / "done", tmp_path / "busy"
    script = DRIVER.format(repo=str(REPO_ROOT), address=ray_cluster.address_info["address"], suite=str(suite_file),
                           runs=str(runs))
    log = tmp_path / "driver.log"
    with open(log, "w") as output:
        driver = subprocess.Popen([sys.executable, "-c", script], stdout=output, stderr=subprocess.STDOUT)
    try:
        done_job, busy_job = expand(load_suite(suite_file))
        status = runs / "jobs" / done_job.hash / "status.json"
        wait_for(lambda: status.exists() and len(starts(busy)) == 1 or driver.poll() is not None,
                 "one job committed and the other one training")
        assert driver.poll() is None, log.read_text()
        worker = starts(busy)[0]
        driver.send_signal(signal.SIGKILL)
        driver.wait()
        wait_for(lambda: not _alive(worker), "Ray to end the dead driver's worker")
    finally:
        driver.kill()

    (busy / "sentinel").touch()
    recorder = Recorder()
    summary = run_suite(load_suite(suite_file), runs, options=RunOptions(device="cpu"), observer=recorder,
                        executor="ray", executor_options={"gpus_per_job": 0})
    assert [r.state for r in summary.jobs] == ["cached", "trained"]
    assert len(starts(done)) == 1 and len(starts(busy)) == 2
    # the dead driver's tasks had half of the logical GPU each: Ray made GPU 0 visible, the jobs fell back to the CPU
    assert [line[1:] for line in start_lines(done) + start_lines(busy)[:1]] == [["cpu", "0"], ["cpu", "0"]]
    assert [e[2] for e in recorder.of("finished", done_job.hash)] == ["cached"]


def _alive(pid: int) -> bool:
    import psutil  # a dependency of Ray

    try:
        return psutil.Process(pid).status() != psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return False


@pytest.mark.ray
@pytest.mark.timeout(1500)
@pytest.mark.slow
def test_a_suite_that_selects_streams_its_scored_jobs_and_matches_the_local_executor(ray_cluster, tmp_path):
    """Under Ray the scored jobs of a unit are submitted as soon as its sweep is stored (jobs_added), and the run
    stores what the local executor stores: the same jobs, the same selection, the same numbers."""
    from gibench.running.selection import read_selections
    from gibench.suites.jobs import sweep_jobs
    from gibench.suites.suite import parse_suite

    raw = {"name": "select-ray", "datasets": [{"gaussian_mixture": {"train_size": 200, "test_size": 100, "height": 8,
                                                                     "width": 8}}],
           "backbones": ["gibench_linear"], "regularizers": ["erm", "gradient_norm"], "evaluators": ["accuracy"],
           "seeds": [0, 1], "train": {"epochs": 1, "batch_size": 64, "lr": 1.0e-2},
           "sweep": {"seeds": [0], "values": {"gradient_norm": [0.001, 10.0]}},
           "select": {"rule": "max_drop", "max_drop": 0.05}}
    suite = parse_suite(raw)

    class Added(Recorder):
        def jobs_added(self, jobs):
            self.events.append(("added", len(jobs)))

    recorder = Added()
    summary = run_suite(suite, tmp_path / "ray", options=RunOptions(device="cpu"), observer=recorder, executor="ray")
    local = run_suite(suite, tmp_path / "local", options=RunOptions(device="cpu"))
    assert summary.ok and local.ok, summary.failures() + local.failures()
    assert [e for e in recorder.events if e[0] == "added"] and all(n > 0 for kind, n, *_ in recorder.events
                                                                   if kind == "added")
    assert {r.job.hash for r in summary.jobs} == {r.job.hash for r in local.jobs} > {j.hash for j in sweep_jobs(suite)}
    assert read_selections(tmp_path / "ray") == read_selections(tmp_path / "local")
    pd_testing = pytest.importorskip("pandas.testing")
    pd_testing.assert_frame_equal(result_values(tmp_path / "ray"), result_values(tmp_path / "local"))
