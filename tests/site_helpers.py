"""Helpers of the browser tests: a tiny real run, hostile edits of a submission, and a page watcher for Playwright.

The browser is Debian's ``chromium`` (found on ``PATH``), driven by Playwright for Python through
``executable_path``: Playwright's own browser download is never used (no network here or in CI).
"""

from __future__ import annotations

import hashlib
import json
import shutil
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import unquote, urlsplit

import pandas as pd
import yaml

__all__ = [
    "BROWSER_ARGS", "BROWSER_SUITE", "LOCAL_SCHEMES", "PageWatcher", "chromium_path", "hostile_edit", "launch",
    "local_target", "run_tiny_suite", "submit_rows",
]

#: Chromium flags for a headless run as root in a container with no network: no sandbox (root), no GPU, and none
#: of the background fetches (updates, sync, QUIC probes) that would show up as failed requests.
BROWSER_ARGS = ["--no-sandbox", "--disable-gpu", "--disable-background-networking", "--disable-component-update",
                "--disable-sync", "--no-first-run", "--disable-quic", "--disable-extensions"]

LOCAL_SCHEMES = ("file:", "data:", "blob:", "about:")
#: Three regularizers of three families, two seeds, two evaluators: six linear models on the bundled digits (seconds).
BROWSER_SUITE = {
    "name": "browser",
    "description": "one epoch of a linear model on the bundled subset, three regularizer families, two seeds",
    "datasets": ["mnist_subset"],
    "backbones": ["gibench_linear"],
    "regularizers": ["erm", {"gradient_norm": {"weight": 1.0e-3}}, {"gaussian_noise": {"sigma": 0.1}}],
    "evaluators": ["accuracy", {"pixel_perturbation": {"max_images": 100}}],
    "seeds": [0, 1],
    "train": {"epochs": 1, "batch_size": 128, "optimizer": "adam", "lr": 1.0e-2},
}


def chromium_path() -> str | None:
    """The system Chromium (Debian's ``chromium`` package), or None when it is not installed."""
    return shutil.which("chromium") or shutil.which("chromium-browser")


def launch(playwright: Any):
    """A headless Chromium from the system package (never Playwright's bundled download)."""
    return playwright.chromium.launch(executable_path=chromium_path(), headless=True, args=BROWSER_ARGS)


def submit_rows(runs_dir: Path, out: Path, metadata: dict, rows: list[dict], suite: dict) -> Path:
    """A submission of hand-made results.csv ``rows`` (no training), as if ``suite`` had produced them: a one-run
    manifest in ``runs_dir`` (created), then ``gibench submit`` into ``out``."""
    from gibench.store.provenance import environment_info, suite_hash
    from gibench.submissions.build import build_submission

    runs_dir.mkdir()
    manifest = {"runs": [{
        "suite_name": suite["name"], "suite_hash": suite_hash(suite), "suite": suite,
        "jobs": sorted({r["job_hash"] for r in rows}), "started": "2025-01-01T00:00:00+00:00",
        "finished": "2025-01-01T01:00:00+00:00", "environment": environment_info("cpu"),
        "plugins": {"regularizers": {"erm": {"distribution": "gibench", "version": "0.1.0"}}}}]}
    (runs_dir / "manifest.json").write_text(json.dumps(manifest))
    return build_submission(runs_dir, out, metadata, results=pd.DataFrame(rows))


def run_tiny_suite(folder: Path, suite: dict | None = None):
    """Train and evaluate ``suite`` (default :data:`BROWSER_SUITE`) on the CPU into ``folder/runs`` with one
    intra-op thread; return the runs folder and the ``RunSummary``."""
    import torch

    from gibench.running.runner import RunOptions, run_suite
    from gibench.suites.suite import load_suite

    suite_file = folder / "browser.yaml"
    suite_file.write_text(yaml.safe_dump(suite or BROWSER_SUITE, sort_keys=False))
    runs = folder / "runs"
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        return runs, run_suite(load_suite(suite_file), runs, RunOptions(device="cpu"))
    finally:
        torch.set_num_threads(threads)


def hostile_edit(folder: Path, metadata: Callable[[dict], None] | None = None,
                 results: Callable[[pd.DataFrame], pd.DataFrame] | None = None,
                 provenance: Callable[[dict], None] | None = None) -> Path:
    """Edit a submission by hand the way a hostile user would, and make its hashes consistent again.

    ``metadata`` and ``provenance`` change those objects of submission.json in place; ``results`` returns a changed
    copy of results.csv's table. Then each suite's hash is recomputed (and the runs' ``suite_hash`` follow it),
    ``results.rows`` and ``results.sha256`` are recomputed, the id is recomputed as
    ``gibench submit`` forms it (slug of the name + the first 12 hex digits of the sha256 of the canonical JSON of
    metadata, provenance, the results' sha256 and the artifacts record when it lists any), and the folder is renamed
    to the new id. Returns the new folder.
    """
    from gibench.core.fsio import canonical_hash
    from gibench.submissions.build import slugify

    doc = json.loads((folder / "submission.json").read_text(encoding="utf-8"))
    if metadata is not None:
        metadata(doc["metadata"])
    if provenance is not None:
        provenance(doc["provenance"])
        _rehash_suites(doc["provenance"])
    data = (folder / "results.csv").read_bytes()
    if results is not None:
        table = results(pd.read_csv(folder / "results.csv", dtype=str, keep_default_na=False))
        data = table.to_csv(index=False, lineterminator="\n").encode("utf-8")
        doc["results"]["rows"] = len(table)
    doc["results"]["sha256"] = hashlib.sha256(data).hexdigest()
    payload = {"metadata": doc["metadata"], "provenance": doc["provenance"], "results_sha256": doc["results"]["sha256"]}
    artifacts = doc.get("artifacts") or {}
    if artifacts.get("files") or artifacts.get("left_out"):
        payload["artifacts"] = artifacts
    doc["id"] = f"{slugify(doc['metadata']['name'])}-{canonical_hash(payload, length=12)}"
    target = folder.with_name(doc["id"])
    folder.rename(target)
    (target / "results.csv").write_bytes(data)
    (target / "submission.json").write_text(json.dumps(doc, indent=2) + "\n", encoding="utf-8")
    return target


def _rehash_suites(provenance: dict) -> None:
    from gibench.store.provenance import suite_hash

    renamed = {}
    for record in provenance["suites"]:
        new = suite_hash(record["suite"])
        renamed[record["hash"]] = new
        record["hash"] = new
    for run in provenance["runs"]:
        run["suite_hash"] = renamed.get(run["suite_hash"], run["suite_hash"])


def local_target(url: str) -> tuple[Path, str] | None:
    """The file and the fragment a ``file://`` URL points to; None for any other scheme."""
    parts = urlsplit(url)
    if parts.scheme != "file":
        return None
    return Path(unquote(parts.path)), unquote(parts.fragment)


@dataclass
class PageWatcher:
    """Records, for one page, console errors, uncaught exceptions, failed requests, opened dialogs and any request
    that is not for a local file (a CDN script, a web font, a tracking pixel)."""

    console_errors: list[str] = field(default_factory=list)
    page_errors: list[str] = field(default_factory=list)
    failed_requests: list[str] = field(default_factory=list)
    dialogs: list[str] = field(default_factory=list)
    remote_requests: list[str] = field(default_factory=list)  # not file:, data:, blob: or about: (the site is offline)

    def attach(self, page: Any) -> PageWatcher:
        page.on("console", lambda m: self.console_errors.append(m.text) if m.type == "error" else None)
        page.on("pageerror", lambda e: self.page_errors.append(str(e)))
        page.on("requestfailed", lambda r: self.failed_requests.append(f"{r.url} ({r.failure})"))
        page.on("response", lambda r: self.failed_requests.append(f"{r.url} (HTTP {r.status})")
                if r.status >= 400 else None)
        page.on("request", lambda r: None if r.url.startswith(LOCAL_SCHEMES) else self.remote_requests.append(r.url))
        page.on("dialog", self._dialog)
        return self

    def _dialog(self, dialog: Any) -> None:
        self.dialogs.append(f"{dialog.type}: {dialog.message}")
        dialog.dismiss()

    def reset(self) -> None:
        """Forget what was recorded (before the watched page goes to another address)."""
        for found in (self.console_errors, self.page_errors, self.failed_requests, self.dialogs, self.remote_requests):
            found.clear()

    def problems(self) -> dict[str, list[str]]:
        found = {"console errors": self.console_errors, "page errors": self.page_errors,
                 "failed requests": self.failed_requests, "dialogs": self.dialogs,
                 "requests leaving file://": self.remote_requests}
        return {k: v for k, v in found.items() if v}
