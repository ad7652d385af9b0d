"""The whole loop through the CLI: run → report → submit → validate → leaderboard build."""

from __future__ import annotations

import csv

from gibench.cli import main


def test_run_report_submit_and_build_the_site(tiny_suite_file, tmp_path, capsys):
    runs, subs, site = tmp_path / "runs", tmp_path / "submissions", tmp_path / "site"
    assert main(["run", "--suite", str(tiny_suite_file), "--runs-dir", str(runs), "--device", "cpu"]) == 0
    out = capsys.readouterr().out
    assert "gradient_norm(weight=0.001)" in out and "leaderboard page:" in out
    assert (runs / "site" / "index.html").exists()

    assert main(["report", "--runs-dir", str(runs), "--csv", str(tmp_path / "summary.csv")]) == 0
    rows = list(csv.DictReader((tmp_path / "summary.csv").open()))
    accuracy = {r["variant"]: r for r in rows if r["metric"] == "accuracy"}
    assert set(accuracy) == {"erm", "gradient_norm(weight=0.001)"}
    assert float(accuracy["erm"]["mean"]) > 0.7

    assert main(["submit", "--runs-dir", str(runs), "--name", "Tiny <b>test</b>", "--author", "A. Researcher",
                 "--out", str(subs)]) == 0
    (submission,) = [p for p in subs.iterdir() if p.is_dir()]
    assert main(["validate", str(submission)]) == 0
    assert main(["leaderboard", "build", "--submissions", str(subs), "--out", str(site)]) == 0
    html = (site / "index.html").read_text()
    assert "gradient_norm(weight=0.001)" in html and "Tiny &lt;b&gt;test&lt;/b&gt;" in html


def test_user_errors_print_one_line_and_exit_2(tmp_path, capsys):
    assert main(["run", "--suite", "no_such_suite", "--runs-dir", str(tmp_path)]) == 2
    err = capsys.readouterr().err
    assert "error:" in err and "no suite file 'no_such_suite'" in err and "Traceback" not in err


def test_dry_run_prints_job_hashes(tiny_suite_file, tmp_path, capsys):
    assert main(["run", "--suite", str(tiny_suite_file), "--runs-dir", str(tmp_path / "r"), "--dry-run"]) == 0
    out = capsys.readouterr().out
    from gibench.suites.jobs import expand
    from gibench.suites.suite import load_suite

    for job in expand(load_suite(tiny_suite_file)):
        assert job.hash in out
