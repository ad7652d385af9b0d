"""The pictures of one table page, from the artifacts the submissions packed (``gibench submit``).

* Saliency gallery: for every row, the saliency grid of its lowest seed (the ``pixel_perturbation`` grid: the inputs,
  their input-gradient saliency, then half the pixels removed least- and most-salient-first; else the first
  evaluator's ``saliency_grid``), side by side in the order of the table. Every built-in evaluator draws its grid
  from the first images of the stored test split (``gibench.api.artifacts.eval_subset``: the split is stored
  in one seeded order per dataset), so every grid of a table shows the same test images. The build checks it: the
  top strip of every grid (the input row) must be pixel-identical, and the page says whether it was.
* GAN-test samples (``gan_test``'s ``samples`` grid) the same way, when there are any. Only PNG files are shown
  (what the built-in evaluators write); a submitted SVG, which could carry script, is never copied into the site.
* Curves: for every evaluation with a ``curves`` artifact, one figure per curve (:data:`CURVES` for the built-ins:
  pixel perturbation in both orders, the density ratio over noise levels, DiffROAR over k; every curve of other
  evaluators; ``*_std`` companions left out), one line per row: the mean over the row's seeds of y at each x (seeds
  whose x differ from the first seed's are left out of the mean).
* Scatter: accuracy against every non-diagnostic headline with the Pareto front (:func:`figures.scatter_figure`);
  collapsed rows (:mod:`gibench.results.collapse`) are left out, and the caption says how many.

Files go to ``tables/<anchor>/``; page links are relative to the table page.
"""

from __future__ import annotations

__all__ = ["Picture", "TablePictures", "make_pictures"]

import json
import math
import shutil
import warnings
from collections import defaultdict
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from gibench.leaderboard.figures import CurveSeries, ScatterPoint, curve_figure, scatter_figure
from gibench.leaderboard.tables import ACCURACY_EVALUATOR, Row, Table
from gibench.results.tables import complete
from gibench.submissions.build import LoadedSubmission, slugify

GALLERY_EVALUATORS = ("pixel_perturbation", "score_alignment", "blockmnist")  # preferred source of the grid
SAMPLES = ("gan_test", "samples")
#: The curves drawn for the built-in evaluators (those the papers plot); every other evaluator's curves are all drawn.
CURVES = {"pixel_perturbation": ("least_salient_first", "most_salient_first"), "density_ratio": ("mean_log_ratio",),
          "diffroar": ("diffroar",), "gan_test": (), "accuracy": ()}


@dataclass(frozen=True)
class Picture:
    src: str  # relative to the table page
    caption: str
    variant: str = ""
    submission: str = ""


@dataclass
class TablePictures:
    gallery: list[Picture] = field(default_factory=list)
    gallery_source: str = ""  # the evaluator whose grids are shown
    same_inputs: bool | None = None  # None: fewer than two grids to compare
    samples: list[Picture] = field(default_factory=list)
    curves: list[Picture] = field(default_factory=list)
    scatter: list[Picture] = field(default_factory=list)
    left_out: int = 0  # artifacts the submissions did not pack (over their size limit)

    @property
    def empty(self) -> bool:
        return not (self.gallery or self.samples or self.curves or self.scatter)


@dataclass(frozen=True)
class _Job:
    row: tuple[str, str, str, str]
    seed: int
    loaded: LoadedSubmission
    job_hash: str


def make_pictures(table: Table, submissions: list[LoadedSubmission], folder: Path, prefix: str) -> TablePictures:
    """Write the pictures of ``table`` into ``folder`` (``tables/<anchor>``); ``prefix`` is that folder as the page
    links it (``<anchor>/``)."""
    jobs = _jobs(table, submissions)
    labels = _labels(table)
    pictures = TablePictures(left_out=_left_out(jobs))
    _gallery(pictures, table, jobs, labels, folder, prefix)
    _curves(pictures, table, jobs, labels, folder, prefix)
    _scatter(pictures, table, labels, folder, prefix)
    return pictures


def _jobs(table: Table, submissions: list[LoadedSubmission]) -> list[_Job]:
    """Every job of ``table``'s rows, lowest seed first."""
    found: dict[tuple[str, str], _Job] = {}
    for loaded in submissions:
        frame = complete(loaded.results)
        mask = ((frame["dataset"] == table.dataset) & (frame["backbone"] == table.backbone_name)
                & (frame["backbone_params"] == table.backbone_params) & (frame["train_hash"] == table.train_hash))
        for r in frame[mask].drop_duplicates("job_hash").itertuples():
            row = (loaded.submission.id, r.regularizer, r.regularizer_params, r.variant)
            found[(loaded.submission.id, r.job_hash)] = _Job(row, int(r.seed), loaded, str(r.job_hash))
    return sorted(found.values(), key=lambda j: (j.row, j.seed, j.job_hash))


def _left_out(jobs: list[_Job]) -> int:
    """How many artifacts of these jobs their submissions left out (over the size limit)."""
    mine = {(id(j.loaded), j.job_hash) for j in jobs}
    records = {id(j.loaded): j.loaded.submission.artifacts for j in jobs}
    return sum(1 for key, record in records.items() if record is not None
               for item in record.left_out if (key, item.job_hash) in mine)


def _labels(table: Table) -> dict[tuple[str, str, str, str], str]:
    """Row → its label in pictures: the variant, with the submission's name when the table holds several."""
    several = len({r.submission_id for r in table.rows}) > 1
    return {_key(r): r.variant + (f" · {r.submission}" if several else "") for r in table.rows}


def _key(row: Row) -> tuple[str, str, str, str]:
    return (row.submission_id, row.regularizer, row.regularizer_params, row.variant)


def _artifacts(job: _Job) -> list[tuple[Any, Path]]:
    """(ArtifactFile, absolute path) of every packed artifact of ``job``."""
    found = []
    for artifact in job.loaded.artifact_files:
        if artifact.job_hash == job.job_hash:
            path = job.loaded.artifact_path(artifact)
            if path is not None and path.is_file():
                found.append((artifact, path))
    return found


def _first_per_row(table: Table, jobs: list[_Job], evaluator: str, name: str) -> list[tuple[Row, _Job, Path]]:
    """For each row in table order: its lowest-seed job that has the artifact ``name`` of ``evaluator``."""
    by_row: dict[tuple, tuple[_Job, Path]] = {}
    for job in jobs:
        if job.row in by_row:
            continue
        path = next((p for a, p in _artifacts(job) if a.evaluator == evaluator and a.name == name
                     and p.suffix.lower() == ".png"), None)
        if path is not None:
            by_row[job.row] = (job, path)
    return [(r, *by_row[_key(r)]) for r in table.rows if _key(r) in by_row]


def _gallery(pictures: TablePictures, table: Table, jobs: list[_Job], labels: dict, folder: Path,
             prefix: str) -> None:
    evaluators = [*GALLERY_EVALUATORS, *sorted({a.evaluator for j in jobs for a, _ in _artifacts(j)})]
    for evaluator in evaluators:
        found = _first_per_row(table, jobs, evaluator, "saliency_grid")
        if found:
            pictures.gallery_source = evaluator
            pictures.gallery = _copy(found, labels, folder, prefix, "saliency")
            pictures.same_inputs = _same_inputs([path for _, _, path in found]) if len(found) > 1 else None
            break
    pictures.samples = _copy(_first_per_row(table, jobs, *SAMPLES), labels, folder, prefix, "samples")


def _copy(found: list[tuple[Row, _Job, Path]], labels: dict, folder: Path, prefix: str, stem: str) -> list[Picture]:
    out = []
    for i, (row, job, path) in enumerate(found):
        name = f"{stem}-{i + 1:02d}{path.suffix.lower()}"
        folder.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(path, folder / name)
        out.append(Picture(prefix + name, f"{labels[_key(row)]} (seed {job.seed})", row.variant, row.submission))
    return out


def _same_inputs(paths: list[Path]) -> bool | None:
    """True when every grid has the same size and a pixel-identical top strip (its first eighth: the input row);
    None when a file is not a readable image."""
    from PIL import Image

    strips = []
    for path in paths:
        try:
            with Image.open(path) as image:
                pixels = np.asarray(image.convert("RGB"))
        except (OSError, ValueError):  # not a readable PNG: the comparison cannot be made
            return None
        strips.append(pixels[: max(pixels.shape[0] // 8, 1)])
    return all(s.shape == strips[0].shape and np.array_equal(s, strips[0]) for s in strips[1:])


def _curves(pictures: TablePictures, table: Table, jobs: list[_Job], labels: dict, folder: Path,
            prefix: str) -> None:
    # (evaluator, version, params) -> curve name -> row -> list of (x, y) of its seeds
    found: dict[tuple[str, str, str], dict[str, dict[tuple, list]]] = defaultdict(lambda: defaultdict(dict))
    meta: dict[tuple[str, str, str, str], tuple[str, str]] = {}
    for job in jobs:
        for artifact, path in _artifacts(job):
            if artifact.name != "curves" or path.suffix.lower() != ".json":
                continue
            evaluation = (artifact.evaluator, artifact.evaluator_version, artifact.evaluator_params)
            for name, curve in _read_curves(path).items():
                if artifact.evaluator in CURVES and name not in CURVES[artifact.evaluator]:
                    continue
                found[evaluation][name].setdefault(job.row, []).append((tuple(curve["x"]), tuple(curve["y"])))
                meta.setdefault((*evaluation, name), (str(curve.get("x_label", "x")), str(curve.get("y_label", name))))
    versions = defaultdict(set)
    for evaluator, version, params in found:
        versions[evaluator].add((version, params))
    order = {_key(r): i for i, r in enumerate(table.rows)}
    for evaluation in sorted(found):
        evaluator, version, params = evaluation
        suffix = f" (v{version}, {params})" if len(versions[evaluator]) > 1 else ""
        for name in sorted(found[evaluation]):
            series = [CurveSeries(labels[row], *_mean_curve(runs), color=order[row])
                      for row, runs in sorted(found[evaluation][name].items(), key=lambda kv: order.get(kv[0], 1e9))
                      if row in order]
            if not series:
                continue
            file = f"curve-{slugify(evaluator, 40)}-{slugify(name, 40)}" + (
                f"-{slugify(version, 10)}-{len(pictures.curves)}" if suffix else "") + ".svg"
            x_label, y_label = meta[(*evaluation, name)]
            curve_figure(folder / file, series, f"{evaluator}: {name}{suffix}", x_label, y_label)
            pictures.curves.append(Picture(prefix + file, f"{evaluator}: {name}{suffix}, mean over seeds"))


def _read_curves(path: Path) -> dict[str, dict]:
    """The curves of a ``curves`` artifact ({name: {x, y, x_label, y_label}}), without ``*_std`` companions; a file
    that is not in that format gives none."""
    try:
        payload = json.loads(path.read_text("utf-8"))
    except (OSError, ValueError):
        return {}
    if not isinstance(payload, dict):
        return {}
    return {str(k): v for k, v in payload.items() if not str(k).endswith("_std") and isinstance(v, dict)
            and _numbers(v.get("x"), none=False) and _numbers(v.get("y"), none=True) and len(v["x"]) == len(v["y"]) > 0}


def _numbers(values: Any, none: bool) -> bool:
    """A list of numbers (and of None, the JSON of a missing value, when ``none``)."""
    return isinstance(values, list) and all(
        (isinstance(v, (int, float)) and not isinstance(v, bool)) or (none and v is None) for v in values)


def _mean_curve(runs: list[tuple[tuple, tuple]]) -> tuple[tuple[float, ...], tuple[float, ...]]:
    x = runs[0][0]
    ys = np.array([[math.nan if v is None else float(v) for v in y] for xs, y in runs if xs == x], dtype=float)
    with warnings.catch_warnings():  # a point missing in every seed stays NaN (a gap in the line), without a warning
        warnings.simplefilter("ignore", RuntimeWarning)
        mean = np.nanmean(ys, axis=0)
    return tuple(float(v) for v in x), tuple(float(v) for v in mean)


def _scatter(pictures: TablePictures, table: Table, labels: dict, folder: Path, prefix: str) -> None:
    accuracy = next((i for i, c in enumerate(table.columns) if c.evaluator == ACCURACY_EVALUATOR and c.headline
                     and c.evaluated), None)
    if accuracy is None:
        return
    for i, column in enumerate(table.columns):
        if i == accuracy or not column.headline or column.diagnostic or not column.evaluated:
            continue
        points = [ScatterPoint(labels[_key(r)], r.cells[i].sort_value, r.cells[accuracy].sort_value,
                               r.cells[i].low, r.cells[i].high, r.cells[accuracy].low, r.cells[accuracy].high,
                               color=n)
                  for n, r in enumerate(table.rows) if r.cells[i].sort_value is not None
                  and r.cells[accuracy].sort_value is not None and not r.collapsed]
        if len(points) < 2:
            continue
        file = f"scatter-{column.id}.svg"
        scatter_figure(folder / file, points, column.label, column.higher_is_better, "accuracy",
                       f"accuracy against {column.label}")
        caveat = f"; † {column.caveat}" if column.caveat else ""
        gone = f"; collapsed rows left out ({len(table.collapsed_rows)})" if table.collapsed_rows else ""
        pictures.scatter.append(Picture(prefix + file, f"accuracy against {column.label}: one point per row "
                                        f"(95 % intervals as bars), dashed: the Pareto front{caveat}{gone}"))

