"""The trained models a submission references: ``models.json`` in the submission folder (docs/models.md, "Submitting
with models").

It is the model index of ``gibench export`` (docs/models.md, "models.json") in which every file is named by ``url``
with its SHA-256 and size: a submission references its models and never holds them, so the repository of
submissions stays small. ``submission.json`` records the index's SHA-256 and model count (``models``,
:class:`gibench.submissions.schema.ModelsFile`), and the submission's id covers that digest, like the results': a
model swapped after ``gibench submit`` changes its SHA-256 in the index, so the index no longer matches the recorded
digest, and re-recording it gives content that no longer matches the id; ``gibench verify --reevaluate`` then loads
each model checked against the index (gibench.submissions.reevaluate).

* :func:`reference_models` writes the index at submit, from a folder made by ``gibench export`` and the URL prefix
  its content is (or will be) published under: ``<prefix>/<job hash>/model.safetensors`` (and the two card files),
  each with the SHA-256 and size of the exported file. Every exported file is hashed again first, and each model must
  come from the checkpoint of the runs directory being submitted (its card records that checkpoint's SHA-256).
* :func:`check_models` is ``gibench validate``'s check of its shape: the model index format; every file by ``url``
  (:data:`SUBMISSION_URL_SCHEMES`: any ``https://`` host, or ``file:``), never by ``path``; 64 hex digits of SHA-256
  and a positive size; every model a job of the submission's results, once, with that job's dataset, backbone,
  regularizer, variant and seed; the count and SHA-256 recorded in ``submission.json``. Nothing is fetched.
* :func:`submitted_models` lists the entries of a validated submission.

``file:`` URLs are local: ``file:///absolute/path`` or ``file:relative/path``, which is resolved against the
submission folder (:func:`gibench.submissions.model_files.file_url_path`), so a submission in ``submissions/<id>/``
reaches a release folder at the repository's root as ``file:../../<release folder>/...`` on every clone.
"""

from __future__ import annotations

__all__ = ["SUBMISSION_URL_SCHEMES", "check_file_urls", "check_models", "reference_models", "submitted_models"]

import json
import math
import os
import urllib.parse
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pandas as pd

from gibench.core.errors import SubmissionError
from gibench.core.fsio import file_sha256
from gibench.submissions.model_files import ModelFileError, file_url_path, sha256_hex
from gibench.submissions.schema import MODELS_FILE, LoadedSubmission, ModelsFile

#: The URL schemes a submission's models.json may name its files by: a published host, or the local disk.
SUBMISSION_URL_SCHEMES = ("https", "file")
_REMAKE = ("submit again with `gibench submit --models <exported folder> --models-url <prefix>` instead of editing "
           "models.json by hand")
_URL_FIX = ("an https:// URL (any host), file:///absolute/path, or file:relative/path (resolved against the "
            "submission folder)")
#: Identity fields of an entry that must agree with its job's rows in results.csv (results column, entry field).
_ROW_FIELDS = (("dataset", "dataset"), ("backbone", "backbone_name"), ("regularizer", "regularizer"),
               ("variant", "variant"), ("seed", "seed"), ("train_hash", "train_hash"))


def reference_models(export_dir: str | Path, url_prefix: str, jobs: set[str], runs_dir: str | Path,
                     warn: Callable[[str], None] | None = None) -> bytes:
    """The bytes of a submission's ``models.json``: every model of the exported folder ``export_dir`` whose job is in
    ``jobs``, its files named ``<url_prefix>/<job hash>/<file>`` with the exported files' SHA-256 and size.

    Raises SubmissionError (naming ``--models`` or ``--models-url``) for a prefix that is not https or file, a folder
    that is not an export, an exported file changed since the export, a model exported from another checkpoint than
    ``runs_dir``'s, or an export that holds no model of ``jobs``.
    """
    from gibench.store.runs import RunStore
    from gibench.submissions.model_cards import CARD_FILE, CARD_SCHEMA_VERSION, INDEX_FORMAT, read_index

    export_dir = Path(export_dir)
    prefix = _check_prefix(url_prefix)
    index_path = export_dir / MODELS_FILE
    if not index_path.is_file():
        raise SubmissionError(f"--models {export_dir}: no {MODELS_FILE} in it. Fix: pass the folder that `gibench "
                              "export --runs-dir <runs> --out <folder>` wrote.")
    try:
        raw = json.loads(index_path.read_text(encoding="utf-8"))
        entries = read_index(raw, str(index_path))
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise SubmissionError(f"--models {export_dir}: {MODELS_FILE} is not valid JSON ({exc}).") from None
    except ModelFileError as exc:
        raise SubmissionError(f"--models {export_dir}: {exc} Fix: export again with `gibench export`.") from None
    store = RunStore(Path(runs_dir))
    models, outside = [], 0
    for item, entry in zip(raw["models"], entries):
        job = entry.identity.job_hash
        if job not in jobs:
            outside += 1
            continue
        files = {}
        for name, ref in entry.files.items():
            if ref.path is None:
                raise SubmissionError(f"--models {export_dir}: {MODELS_FILE} names {name} of job {job} by URL: it is "
                                      "not a folder made by `gibench export`. Fix: pass the exported folder itself.")
            path = export_dir / ref.path
            if not path.is_file() or path.stat().st_size != ref.bytes or file_sha256(path) != ref.sha256:
                raise SubmissionError(f"--models {export_dir}: {path} is missing or differs from the SHA-256 and size "
                                      f"its {MODELS_FILE} records (it changed since `gibench export`). Fix: export "
                                      "again.")
            files[name] = {"url": f"{prefix}/{ref.path}", "sha256": ref.sha256, "bytes": ref.bytes}
        _check_checkpoint(export_dir, entry, store.job(job), CARD_FILE)
        models.append({**{k: v for k, v in item.items() if k != "files"}, "files": files})
    if not models:
        raise SubmissionError(f"--models {export_dir}: none of its {len(entries)} model(s) is of a job of this "
                              "submission. Fix: export the runs directory being submitted (`gibench export --runs-dir "
                              "<runs> --out <folder>`).")
    if outside and warn is not None:
        warn(f"--models {export_dir}: {outside} exported model(s) of jobs this submission does not hold are not "
             "referenced")
    index = {"format": INDEX_FORMAT, "schema_version": CARD_SCHEMA_VERSION,
             "models": sorted(models, key=lambda m: (m["name"], m["job_hash"]))}
    return (json.dumps(index, indent=2, sort_keys=True, ensure_ascii=False) + "\n").encode("utf-8")


def check_file_urls(data: bytes, folder: Path, export_dir: str | Path) -> None:
    """Every ``file:`` URL of the index ``data``, resolved against the submission folder ``folder``, names a file
    with the recorded SHA-256 (at submit: a wrong relative prefix is caught before anything is written)."""
    export_dir = Path(export_dir)
    for entry in json.loads(data.decode("utf-8"))["models"]:
        for name, ref in entry["files"].items():
            url = ref["url"]
            if urllib.parse.urlparse(url).scheme != "file":
                continue
            path = file_url_path(url, folder)
            exported = export_dir / entry["job_hash"] / name
            if path.is_file() and exported.is_file() and os.path.samefile(path, exported):
                continue  # the exported file itself, hashed already
            if not path.is_file() or file_sha256(path) != ref["sha256"]:
                raise SubmissionError(
                    f"--models-url: {url} names {path}, which " + ("does not exist" if not path.is_file() else
                                                                   "differs from the exported file")
                    + f". Fix: a relative file: URL starts from the submission folder ({folder.parent}/<id>/), e.g. "
                    f"file:{os.path.relpath(export_dir, folder)} for the exported folder {export_dir}.")


def check_models(folder: Path, record: ModelsFile | None, results: pd.DataFrame, file: Path | str) -> bytes:
    """Check ``folder``'s ``models.json`` against the record ``record`` of ``submission.json`` (``file``) and the
    results table; return its bytes (empty when the submission references no models). See the module docstring."""
    from gibench.submissions.model_cards import read_index

    path = folder / MODELS_FILE
    if record is None:
        if path.exists():
            raise SubmissionError(f"{path} is not recorded in field 'models' of {file}, so the submission's id does "
                                  f"not cover it (it was added after `gibench submit`). Fix: remove it, or {_REMAKE}.")
        return b""
    if not path.is_file():
        raise SubmissionError(f"{path} is missing (named by field 'models.file' in {file}). Fix: {_REMAKE}.")
    data = path.read_bytes()
    try:
        raw = json.loads(data.decode("utf-8"))
        _check_urls(raw, path)  # before the index's own check, which also accepts http
        entries = read_index(raw, str(path))
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise SubmissionError(f"{path} is not valid UTF-8 JSON ({exc}). Fix: {_REMAKE}.") from None
    except ModelFileError as exc:
        raise SubmissionError(f"{exc} Fix: {_REMAKE}.") from None
    rows = _job_rows(results)
    seen: dict[str, int] = {}
    for number, entry in enumerate(entries):
        at = f"{path}: models[{number}]"
        job = entry.identity.job_hash
        if job not in rows:
            raise SubmissionError(f"{at}.job_hash {job!r} is not a job of this submission (results.csv has no row "
                                  f"of it). Fix: list only models of the submitted jobs; {_REMAKE}.")
        if job in seen:
            raise SubmissionError(f"{at}.job_hash {job!r} is listed a second time (first as models[{seen[job]}]). "
                                  "Fix: one entry per job.")
        seen[job] = number
        for column, name in _ROW_FIELDS:
            expected = rows[job].get(column)
            value = getattr(entry.identity, name)
            if expected is not None and str(value) != str(expected):
                raise SubmissionError(f"{at}.{name} is {value!r}, but the rows of job {job} in results.csv say "
                                      f"{expected!r}. Fix: {_REMAKE}.")
        for name, ref in entry.files.items():
            where = f"{at}.files.{name}"
            if ref.url is None:
                raise SubmissionError(f"{where}.path {ref.path!r}: a submission names its model files by url, never "
                                      f"by a path inside it (it references models and does not hold them). Fix: "
                                      f"{_URL_FIX}; {_REMAKE}.")
            if ref.bytes < 1:
                raise SubmissionError(f"{where}.bytes is {ref.bytes}: a model file is never empty. Fix: {_REMAKE}.")
    if len(entries) != record.models:
        raise SubmissionError(f"{path} lists {len(entries)} model(s) but field 'models.models' in {file} says "
                              f"{record.models}. Fix: {_REMAKE}.")
    if sha256_hex(data) != record.sha256:
        raise SubmissionError(f"{path} does not match field 'models.sha256' in {file}: it changed after `gibench "
                              f"submit`. Fix: {_REMAKE}.")
    return data


def submitted_models(submission: LoadedSubmission) -> list[Any]:
    """The entries (:class:`gibench.submissions.model_cards.IndexEntry`) of a validated submission's
    ``models.json``, in its order; empty when it references no models."""
    from gibench.submissions.model_cards import read_index

    if not submission.models_data:
        return []
    return read_index(json.loads(submission.models_data.decode("utf-8")), MODELS_FILE)


# ----------------------------------------------------------------------------------------------------------------------


def _allowed_url(url: str) -> bool:
    """An https URL with a host, or a file URL naming a local path (no other host)."""
    parsed = urllib.parse.urlparse(url)
    return (parsed.scheme == "https" and bool(parsed.netloc)) or (parsed.scheme == "file"
                                                                  and parsed.netloc in ("", "localhost"))


def _check_urls(raw: Any, path: Path) -> None:
    """Every ``url`` of the index ``raw`` is one :func:`_allowed_url` accepts (the rest of its shape is
    :func:`gibench.submissions.model_cards.read_index`'s to check)."""
    models = raw.get("models") if isinstance(raw, dict) else None
    for number, item in enumerate(models if isinstance(models, list) else []):
        files = item.get("files") if isinstance(item, dict) else None
        for name, ref in (files.items() if isinstance(files, dict) else ()):
            url = ref.get("url") if isinstance(ref, dict) else None
            if isinstance(url, str) and not _allowed_url(url):
                raise SubmissionError(f"{path}: models[{number}].files.{name}.url {url!r} is not an https:// URL with "
                                      f"a host or a file: URL. Fix: {_URL_FIX}.")


def _check_prefix(prefix: str) -> str:
    if not _allowed_url(str(prefix)):
        raise SubmissionError(f"--models-url {prefix!r} is not an https:// or file: URL. Fix: where the exported "
                              f"folder's content is published: {_URL_FIX}.")
    parsed = urllib.parse.urlparse(str(prefix))
    if parsed.query or parsed.fragment:
        raise SubmissionError(f"--models-url {prefix!r} has a query or fragment; each file's URL is the prefix, "
                              "'/', and its path in the exported folder. Fix: pass the folder's URL alone.")
    return str(prefix).rstrip("/")


def _check_checkpoint(export_dir: Path, entry: Any, folder: Any, card_file: str) -> None:
    """The exported model was made from the runs directory's checkpoint of its job (its card records it)."""
    card_ref = entry.files.get(card_file)
    status = folder.status()
    if card_ref is None or status is None or status.checkpoint_sha256 is None:
        return
    try:
        card = json.loads((export_dir / card_ref.path).read_text(encoding="utf-8"))
        exported = card["provenance"]["checkpoint"]["sha256"]
    except (OSError, ValueError, KeyError, TypeError):
        return
    if exported != status.checkpoint_sha256:
        raise SubmissionError(f"--models {export_dir}: the model of job {entry.identity.job_hash} was exported from "
                              f"checkpoint {exported}, but the submitted runs directory's checkpoint of that job is "
                              f"{status.checkpoint_sha256}: its results were computed from other weights. Fix: export "
                              "again from the runs directory being submitted.")


def _job_rows(results: pd.DataFrame) -> dict[str, dict[str, Any]]:
    """job hash → the values of its rows' identity columns (None where the column is absent or empty)."""
    found: dict[str, dict[str, Any]] = {}
    columns = [c for c, _ in _ROW_FIELDS if c in results.columns]
    for row in results.drop_duplicates("job_hash").to_dict("records"):
        values = {}
        for column in columns:
            value = row[column]
            empty = value is None or (isinstance(value, float) and math.isnan(value)) or str(value) == ""
            values[column] = None if empty else (int(value) if column == "seed" else str(value))
        found[str(row["job_hash"])] = values
    return found
