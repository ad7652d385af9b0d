"""Render ``submissions/`` into a static leaderboard site (Jinja2, autoescaped; no network, no timestamps).

``build_site(submissions_dir, out_dir)`` writes::

    index.html                      rejected folders, then the heatmaps of Δ against erm (per dataset, one per table),
                                    every table (anchor ``#<dataset>--<backbone>[--<train hash>]``), the submissions
                                    with their verification badges
    tables/<anchor>.html            one table again, with its strength curves (selection records, each evaluator
                                    against a swept strength) and its pictures: saliency gallery, GAN-test samples,
                                    curves, accuracy-vs-interpretability scatter plots with the Pareto front
    tables/<anchor>/*.png           those pictures (copied from the submissions' artifacts, or drawn by matplotlib)
    tables/<anchor>.csv, .json      that table's numbers for every metric
    regularizers/<name>.html        paper, objective, parameters and defaults, step cost relative to erm
    evaluators/<name>.html          definition, metrics (direction, bounds, headline, diagnostic), versions
    regularizers/index.html, evaluators/index.html, sanity.html (``fooled`` against ``erm``)
    submissions/<id>.html           metadata, provenance, verification (and which check: re-trained or
                                    re-evaluated) and the referenced models of one submission; a row of a submission
                                    that references models links to them (``#models``)
    submissions/<id>/               a copy of each submission folder (submission.json, results.csv, artifacts/,
                                    models.json)
    submission.schema.json          the JSON Schema of submission.json
    static/style.css, static/leaderboard.js

Choices (also stated on the pages):

* Every submission is validated first. By default one invalid submission stops the build with a SubmissionError
  naming every bad folder and its problem; with ``skip_invalid=True`` (``gibench leaderboard build --skip-invalid``)
  the valid ones are rendered and the rejected folders are listed, with their errors, in a box at the top of the
  index page (never silently dropped).
* The numbers are :func:`gibench.results.summarize` of the submissions' results (``by`` the submission), the function
  ``gibench report`` uses; what a table, row, column and cell are is :mod:`gibench.leaderboard.tables`.
* The index opens with the picture to read first: per dataset, a heatmap of regularizers × evaluator headlines whose
  cells are the Δ against erm, coloured only where its interval excludes zero (:mod:`gibench.leaderboard.heatmap`);
  only a box of rejected folders, when there are any, comes before it.
* A table whose backbone differs from another's only in ``bias: false`` (an X-DNN) links to that twin, from the
  index and from its page, and its page shows the two side by side (:mod:`gibench.leaderboard.twins`).
* Pictures: :mod:`gibench.leaderboard.pictures` (which artifacts, and the check that the gallery shows the same test
  images under every regularizer) and :mod:`gibench.leaderboard.figures` (matplotlib). Plugin pages, the sanity view
  and the verification badges: :mod:`gibench.leaderboard.pages`.
* A table page whose submissions swept a regularizer's strength shows, before its pictures, each selection record's
  curve (mean validation accuracy against the swept value, erm's mean, the budget, the choice) and, where the table
  holds several strengths of one entry, each evaluator headline and test accuracy against the strength, drawn inline
  as SVG (:mod:`gibench.leaderboard.strength`); a table without a sweep shows nothing more.
* The page works without JavaScript (every row and the headline columns are there, unsortable); with it
  (static/leaderboard.js) a table sorts by any column, filters by free text, family and evaluator, and shows the
  columns chosen in its column chooser.
"""

from __future__ import annotations

__all__ = ["build_results_site", "build_site", "fmt", "params_label"]

import dataclasses
import json
import logging
import shutil
from pathlib import Path
from typing import Any

import jinja2
import markupsafe
import pandas as pd

import gibench
from gibench.core.errors import SubmissionError
from gibench.core.fsio import atomic_folder
from gibench.leaderboard.heatmap import dataset_groups, make_heatmaps
from gibench.leaderboard.pages import evaluator_pages, model_links, regularizer_pages, sanity_view, verification
from gibench.leaderboard.pictures import make_pictures
from gibench.leaderboard.strength import strength_sections
from gibench.leaderboard.tables import (
    Table,
    aggregate,
    combine,
    fmt,
    make_tables,
    metric_info,
    note_sweep_points,
    params_label,
    split_sweep_points,
)
from gibench.leaderboard.twins import XDNN_NOTE, twin_section
from gibench.submissions.build import (
    MODELS_FILE,
    RESULTS_FILE,
    SUBMISSION_FILE,
    LoadedSubmission,
    scan_submissions,
    submission_json_schema,
)

log = logging.getLogger(__name__)

MANAGED = ("index.html", "static", "tables", "submissions", "submission.schema.json", "regularizers", "evaluators",
           "sanity.html")
STATIC_DIR = Path(__file__).parent / "static"


def build_site(submissions_dir: str | Path, out_dir: str | Path, *, skip_invalid: bool = False) -> Path:
    """Validate every submission under ``submissions_dir`` and render the site into ``out_dir``.

    Only the paths this builder owns (:data:`MANAGED`) are replaced in ``out_dir``; other files there are left alone.
    ``submissions_dir`` may be ``out_dir/submissions`` itself (a self-contained site folder): then its folders are
    kept as they are and only the pages are regenerated. It may not contain ``out_dir``, nor lie in another path the
    builder replaces.

    Returns:
        The path of ``index.html``.

    Raises:
        SubmissionError: an invalid submission (unless ``skip_invalid``; nothing is written then), a
            ``submissions_dir`` that is not a folder, or a layout the build would damage (see above).

    Example:
        >>> build_site("submissions", "site")
        PosixPath('site/index.html')
    """
    out = Path(out_dir)
    in_place = _check_layout(Path(submissions_dir), out)
    scan = scan_submissions(submissions_dir)
    if scan.invalid and not skip_invalid:
        raise SubmissionError(f"Refusing to build the site: {len(scan.invalid)} invalid submission(s) under "
                              f"{submissions_dir} (fix them, or build with --skip-invalid to list them as rejected):\n"
                              + "\n".join(message for _, message in scan.invalid))
    for folder, message in scan.invalid:
        log.warning("rejected submission %s: %s", folder, message)
    return _render(scan.valid, scan.invalid, out, in_place)


def build_results_site(submissions: list[LoadedSubmission], out_dir: str | Path) -> Path:
    """Render already-loaded submissions (e.g. ``gibench.submissions.build.package_results`` of one runs directory,
    built in memory from one ``collect_results`` frame) into ``out_dir``, which is replaced as a whole: the site is
    built in a temporary folder next to it and renamed into place, so concurrent builds never collide and a reader never
    sees a half-built site. Returns the path of ``index.html``.
    """
    out = Path(out_dir)
    with atomic_folder(out, replace=True) as tmp:
        _render(submissions, [], tmp, in_place=False)
    return out / "index.html"


def _render(valid: list[LoadedSubmission], invalid: list[tuple[Path, str]], out: Path, in_place: bool) -> Path:
    every = combine(valid)
    shown, sweep = split_sweep_points(every)  # a sweep's unselected settings are drawn, not tabled
    summary = aggregate(shown, valid)
    info = metric_info(valid)
    tables = make_tables(summary, info, _families())
    note_sweep_points(tables, sweep)
    _clear(out, keep_submissions=in_place)
    env = _environment()
    common = {"gibench_version": gibench.__version__}
    _write_downloads(out / "tables", summary, tables)
    badges = {s.submission.id: verification(s) for s in valid}
    env.globals["with_models"] = frozenset(s.submission.id for s in valid if s.submission.models is not None)
    _write_submission_pages(env, out / "submissions", valid, tables, badges, copy=not in_place)
    (out / "submission.schema.json").write_text(json.dumps(submission_json_schema(), indent=2) + "\n", "utf-8")
    shutil.copytree(STATIC_DIR, out / "static", ignore=shutil.ignore_patterns("__pycache__"))
    regularizers = regularizer_pages(tables)
    evaluators = evaluator_pages(tables, valid, info)
    common |= {"reg_files": {p.name: p.file for p in regularizers}, "ev_files": {p.name: p.file for p in evaluators}}
    strength = strength_sections(tables, aggregate(every, valid) if len(sweep) else summary, valid)
    for table in tables:
        pictures = make_pictures(table, valid, out / "tables" / table.anchor, f"{table.anchor}/")
        _page(env, "table.html.j2", out / "tables" / f"{table.anchor}.html", "../", t=table, pictures=pictures,
              twin=twin_section(table, tables), xdnn_note=XDNN_NOTE, strength=strength[table.anchor], **common)
    for kind, pages in (("regularizers", regularizers), ("evaluators", evaluators)):
        for page in pages:
            _page(env, "plugin.html.j2", out / kind / page.file, "../", page=page, **common)
        _page(env, "plugins.html.j2", out / kind / "index.html", "../", kind=kind, pages=pages, **common)
    rows, left_out = sanity_view(valid, tables)
    _page(env, "sanity.html.j2", out / "sanity.html", "", rows=rows, left_out=left_out, **common)
    index = out / "index.html"
    _page(env, "index.html.j2", index, "", tables=tables, submissions=[s.submission for s in valid], badges=badges,
          rejected=[(f.name, m) for f, m in invalid], regularizers=regularizers, evaluators=evaluators,
          heatmaps=dataset_groups(make_heatmaps(summary, tables)), **common)
    return index


def _page(env: jinja2.Environment, template: str, path: Path, root: str, **context: Any) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(env.get_template(template).render(root=root, **context), "utf-8")


def _families() -> dict[str, str]:
    from gibench.api import registry

    found = {}
    for name in registry.regularizers.names():
        try:
            found[name] = str(getattr(registry.regularizers.get(name), "family", "other"))
        except Exception:  # a plugin that fails to load is shown as "other"; `gibench list` reports why
            found[name] = "other"
    return found


# ----------------------------------------------------------------------------------------------------------------------
# Files


def _breakable(text: str) -> markupsafe.Markup:
    """``text`` escaped, with a line-break opportunity after every underscore (long metric names in headers)."""
    return markupsafe.Markup("_<wbr>").join(markupsafe.escape(part) for part in str(text).split("_"))


def _environment() -> jinja2.Environment:
    env = jinja2.Environment(loader=jinja2.PackageLoader("gibench.leaderboard", "templates"), autoescape=True,
                             undefined=jinja2.StrictUndefined, trim_blocks=True, lstrip_blocks=True)
    env.filters["sentence"] = lambda text: text[:1].upper() + text[1:]
    env.globals["with_models"] = frozenset()  # ids of the submissions that reference their models (set per build)
    env.filters["breakable"] = _breakable
    env.filters["fmt"] = fmt
    return env


def _check_layout(submissions: Path, out: Path) -> bool:
    """True when ``submissions`` is ``out/submissions``; raises SubmissionError for layouts the build would damage."""
    subs, site = submissions.resolve(), out.resolve()
    if site == subs or subs in site.parents:
        raise SubmissionError(f"The site folder {out} is inside the submissions folder {submissions}, where it would "
                              "be read as a submission. Build the site somewhere else (e.g. --out site).")
    if subs == site / "submissions":
        return True
    for name in MANAGED:
        if subs == site / name or site / name in subs.parents:
            raise SubmissionError(f"The submissions folder {submissions} lies in {out / name}, which the site build "
                                  "replaces. Move the submissions, or build the site somewhere else.")
    return False


def _clear(out: Path, keep_submissions: bool) -> None:
    out.mkdir(parents=True, exist_ok=True)
    for name in MANAGED:
        target = out / name
        if name == "submissions" and keep_submissions:
            for page in target.glob("*.html"):
                page.unlink()
            continue
        if target.is_dir() and not target.is_symlink():
            shutil.rmtree(target)
        elif target.exists() or target.is_symlink():
            target.unlink()


def _table_rows(summary: pd.DataFrame, table: Table) -> pd.DataFrame:
    mask = ((summary["dataset"] == table.dataset) & (summary["backbone"] == table.backbone_name)
            & (summary["backbone_params"] == table.backbone_params) & (summary["train_hash"] == table.train_hash))
    return summary[mask]


def _write_downloads(folder: Path, summary: pd.DataFrame, tables: list[Table]) -> None:
    folder.mkdir(parents=True)
    for table in tables:
        rows = _table_rows(summary, table)
        rows.to_csv(folder / f"{table.anchor}.csv", index=False, lineterminator="\n")
        records = [{k: (None if pd.isna(v) else v) for k, v in r.items()} for r in rows.to_dict("records")]
        payload = {"dataset": table.dataset, "backbone": table.backbone, "train_label": table.train_label,
                   "train_hash": table.train_hash, "xdnn": table.xdnn, "twin": table.twin, "rows": records,
                   "agreement": [dataclasses.asdict(a) for a in table.agreement],
                   "problems": [dataclasses.asdict(p) for p in table.problems],
                   "omitted": [dataclasses.asdict(o) for o in table.omitted],
                   "held_back": [dataclasses.asdict(h) | {"note": h.note} for h in table.held_back]}
        (folder / f"{table.anchor}.json").write_text(json.dumps(payload, indent=1, allow_nan=False, default=_plain)
                                                     + "\n", "utf-8")


def _plain(value: Any) -> Any:
    """numpy scalars → Python numbers for json.dumps."""
    return value.item() if hasattr(value, "item") else str(value)


def _write_submission_pages(env: jinja2.Environment, folder: Path, submissions: list[LoadedSubmission],
                            tables: list[Table], badges: dict, copy: bool) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    for loaded in submissions:
        sub = loaded.submission
        if copy:
            _copy_submission(loaded, folder / sub.id)
        in_tables = [t for t in tables if any(r.submission_id == sub.id for r in t.rows)]
        statuses = loaded.results["status"].value_counts().sort_index().to_dict()
        plugins = sorted({(kind, name, p.distribution, p.version) for run in sub.provenance.runs
                          for kind, entries in run.plugins.items() for name, p in entries.items()})
        _page(env, "submission.html.j2", folder / f"{sub.id}.html", "../", sub=sub, tables=in_tables,
              statuses=statuses, plugins=plugins, n_rows=len(loaded.results), badge=badges[sub.id],
              models=model_links(loaded), gibench_version=gibench.__version__)


def _copy_submission(loaded: LoadedSubmission, target: Path) -> None:
    """The submission as a folder ``gibench validate`` accepts (so ``site/submissions`` can be rebuilt in place):
    a copy of its folder, or for one packaged in memory what ``gibench submit`` would have written."""
    if loaded.path is not None:
        shutil.copytree(loaded.path, target, ignore=shutil.ignore_patterns("*.tmp", ".*"))
        return
    target.mkdir()
    (target / SUBMISSION_FILE).write_text(loaded.submission.model_dump_json(indent=2) + "\n", "utf-8")
    (target / RESULTS_FILE).write_bytes(loaded.data)
    if loaded.models_data:
        (target / MODELS_FILE).write_bytes(loaded.models_data)
    for artifact in loaded.artifact_files:
        source = loaded.artifact_path(artifact)
        if source is not None and source.is_file():
            (target / artifact.path).parent.mkdir(parents=True, exist_ok=True)
            shutil.copyfile(source, target / artifact.path)
