"""RunOptions' heartbeat rule: ``min(10, claim_timeout_s / 4)`` unless given, the same for the API and the CLI."""

from __future__ import annotations

import dataclasses

import pytest

import gibench
from gibench.core.errors import ConfigError
from gibench.running.runner import RunOptions, run_suite
from gibench.suites.suite import load_suite


def test_the_heartbeat_follows_the_claim_timeout_unless_given():
    assert RunOptions(claim_timeout_s=5).claim_heartbeat_s == 1.25
    assert RunOptions().claim_heartbeat_s == 10.0 and RunOptions(claim_timeout_s=30).claim_heartbeat_s == 7.5
    assert RunOptions(claim_timeout_s=5, heartbeat_s=2.0).claim_heartbeat_s == 2.0
    assert dataclasses.replace(RunOptions(), claim_timeout_s=5).claim_heartbeat_s == 1.25  # derived again, not kept
    with pytest.raises(ConfigError, match="heartbeat_s .* must be shorter than claim_timeout_s"):
        RunOptions(claim_timeout_s=5, heartbeat_s=5.0)


def test_run_suite_takes_a_short_claim_timeout_alone(tiny_suite_file, tmp_path):
    suite = load_suite(tiny_suite_file)
    for run in (run_suite, gibench.run_suite):  # the runner's and the facade's (which passes every option)
        summary = run(suite, tmp_path / "runs", claim_timeout_s=5, device="cpu", dry_run=True)
        assert summary.dry_run and [r.state for r in summary.jobs] == ["planned", "planned"]
