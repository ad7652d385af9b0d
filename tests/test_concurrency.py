"""Many workers on one store: claims, takeover of dead owners, locked manifest updates, two real runs at once."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from gibench.core.fsio import Claim, Owner, atomic_write_json
from gibench.store.runs import RunStore
from tests.conftest import write_suite

pytestmark = pytest.mark.slow
ENV = {**os.environ, "COLUMNS": "200", "OMP_NUM_THREADS": "1"}
WAIT_S = 240  # an upper bound for a state to be reached; never a duration the test depends on


def _wait_for(path: Path, process: subprocess.Popen) -> None:
    deadline = time.monotonic() + WAIT_S
    while not path.exists():
        assert process.poll() is None, process.communicate()
        assert time.monotonic() < deadline, f"{path} never appeared"
        time.sleep(0.05)


def test_a_claim_is_exclusive_and_released(tmp_path):
    first, second = Claim(tmp_path / "job.lock", 300, 30), Claim(tmp_path / "job.lock", 300, 30)
    assert first.try_acquire()
    assert not second.try_acquire()
    holder = second.holder()
    assert holder.pid == os.getpid() and holder.age_s() < 300
    first.release()
    assert not (tmp_path / "job.owner.json").exists()
    assert second.try_acquire()
    second.release()


def test_the_claim_of_a_killed_owner_is_taken_over_at_once(tmp_path):
    code = ("import sys, time; from gibench.core.fsio import Claim; "
            "c = Claim(sys.argv[1], 300, 30); assert c.try_acquire(); time.sleep(600)")
    owner = subprocess.Popen([sys.executable, "-c", code, str(tmp_path / "job.lock")], env=ENV)
    try:
        _wait_for(tmp_path / "job.owner.json", owner)
        assert not Claim(tmp_path / "job.lock", 300, 30).try_acquire()  # alive: held
        owner.send_signal(signal.SIGKILL)
        owner.wait()
        claim = Claim(tmp_path / "job.lock", 300, 30)
        assert claim.try_acquire()  # the kernel released its lock; the owner file it left does not matter
        assert claim.holder().pid == os.getpid()
        claim.release()
    finally:
        owner.kill()


def test_another_hosts_claim_counts_until_its_heartbeat_is_older_than_the_timeout(tmp_path):
    """On a shared filesystem whose locks other hosts do not see, the owner file's heartbeat decides."""
    now = time.time()
    owner_file = tmp_path / "job.owner.json"
    atomic_write_json(owner_file, {"pid": 1, "host": "other-node", "started": now - 50, "heartbeat": now - 5})
    assert not Claim(tmp_path / "job.lock", timeout_s=60, heartbeat_s=10).try_acquire()
    atomic_write_json(owner_file, {"pid": 1, "host": "other-node", "started": now - 500, "heartbeat": now - 61})
    claim = Claim(tmp_path / "job.lock", timeout_s=60, heartbeat_s=10)
    assert claim.try_acquire()
    assert Owner.read(owner_file).host != "other-node"
    claim.release()


def test_the_heartbeat_refreshes_the_owner_file(tmp_path):
    claim = Claim(tmp_path / "job.lock", timeout_s=10, heartbeat_s=0.05)
    assert claim.try_acquire()
    first = claim.holder().heartbeat
    deadline = time.monotonic() + WAIT_S
    while claim.holder().heartbeat == first:
        assert time.monotonic() < deadline
        time.sleep(0.01)
    claim.release()


def test_manifest_updates_from_many_processes_lose_nothing(tmp_path):
    code = ("import sys; from gibench.store.records import RunEntry; from gibench.store import RunStore\n"
            "store = RunStore(sys.argv[1], repair=True)\n"
            "for i in range(25):\n"
            "    store.record_run(RunEntry(suite_name=sys.argv[2], suite_hash='0'*16, suite={}, jobs=[], "
            "started=str(i), environment={}, run_id=f'{sys.argv[2]}-{i}'))")
    writers = [subprocess.Popen([sys.executable, "-c", code, str(tmp_path), name], env=ENV) for name in "abc"]
    assert [w.wait(timeout=WAIT_S) for w in writers] == [0, 0, 0]
    (tmp_path / "runs").rename(tmp_path / "runs-files")  # read the manifest alone, without its per-run copies
    ids = [run.run_id for run in RunStore(tmp_path).manifest().runs]
    assert sorted(ids) == sorted(f"{name}-{i}" for name in "abc" for i in range(25))


def test_two_runs_started_together_train_each_job_once(tmp_path):
    suite = write_suite(tmp_path, regularizers=["erm", {"gradient_norm": {"weight": [1.0e-3, 1.0e-2, 1.0e-1]}}],
                        evaluators=["accuracy"])
    runs = tmp_path / "runs"
    command = [sys.executable, "-m", "gibench", "run", "--suite", str(suite), "--runs-dir", str(runs),
               "--device", "cpu"]
    processes = [subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=ENV)
                 for _ in range(2)]
    outputs = [p.communicate(timeout=600) for p in processes]
    assert [p.returncode for p in processes] == [0, 0], outputs
    store = RunStore(runs)
    folders = list(store.jobs())
    assert len(folders) == 4
    trainings = {f.hash: [e for e in f.events() if e["event"] == "trained"] for f in folders}
    assert {h: len(t) for h, t in trainings.items()} == {f.hash: 1 for f in folders}  # each job trained once
    trainers = {e["pid"] for t in trainings.values() for e in t}
    assert trainers <= {p.pid for p in processes}
    assert sum(err.count("trained in") for _, err in outputs) == 4
    manifest = json.loads((runs / "manifest.json").read_text())
    assert len(manifest["runs"]) == 2 and all(run["finished"] for run in manifest["runs"])
    assert len({run["run_id"] for run in manifest["runs"]}) == 2
    assert len(list(runs.glob("jobs/*/results/accuracy__*.json"))) == 4
    assert (runs / "site" / "index.html").exists() and not list(runs.glob(".tmp-*"))


def test_doctor_reports_the_claim_of_a_dead_worker(tmp_path):
    from gibench.store.doctor import doctor

    runs = tmp_path / "runs"
    lock = runs / "claims" / "abc.lock"
    code = ("import sys, time; from gibench.core.fsio import Claim; "
            "c = Claim(sys.argv[1], 300, 30); assert c.try_acquire(); time.sleep(600)")
    owner = subprocess.Popen([sys.executable, "-c", code, str(lock)], env=ENV)
    try:
        _wait_for(lock.with_suffix(".owner.json"), owner)
        assert doctor(runs) == []  # a live worker's claim is not a problem
        owner.send_signal(signal.SIGKILL)
        owner.wait()
        (problem,) = doctor(runs)
        assert problem.kind == "stale" and f"claim of a dead worker (pid {owner.pid} on" in problem.what
        assert lock.with_suffix(".owner.json").exists()
        (fixed,) = doctor(runs, fix=True)
        assert fixed.fixed == "deleted" and not lock.with_suffix(".owner.json").exists()
    finally:
        owner.kill()
