"""``gibench export``: a runs directory's trained models, packed into a folder that can be published as it is
(docs/models.md, "The exported folder")::

    <out>/models.json                   the index: every model's identity and the path, SHA-256 and size of its files
    <out>/README.md                     a table of the models, for people
    <out>/<job hash>/model.safetensors  the weights (state dict with the normalization buffers), and in its metadata
                                        the model's identity, training spec and how to build it
    <out>/<job hash>/card.json          the model card (:func:`gibench.submissions.model_cards.job_card`) with the
                                        SHA-256 and size of the weights and of card.md
    <out>/<job hash>/card.md            the card in Markdown

The folder is built under a temporary name and renamed into place, so a half-written export never appears. Every
weights file is read back (hash, structure, tensors equal to the checkpoint's) before the export is committed. The
same checkpoint always gives the same ``model.safetensors`` bytes (gibench.submissions.model_files); cards change
only when the job's results do, and ``models.json`` records when the export was made.
"""

from __future__ import annotations

__all__ = ["ExportSummary", "ExportedModel", "export_models"]

import datetime as dt
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from gibench.core.errors import GibenchError
from gibench.core.fsio import atomic_folder, atomic_write_bytes, atomic_write_json, file_sha256
from gibench.store.runs import RunStore
from gibench.submissions.model_cards import (
    CARD_FILE,
    CARD_MARKDOWN,
    CARD_SCHEMA_VERSION,
    INDEX_FILE,
    INDEX_FORMAT,
    WEIGHTS_FILE,
    ModelIdentity,
    Selection,
    StoredModel,
    card_markdown,
    job_card,
    job_results,
    select_one,
    stored_models,
    weights_metadata,
)
from gibench.submissions.model_files import FileRef, ModelFileError, read_weights, sha256_hex, write_weights
from gibench.version import __version__


@dataclass(frozen=True)
class ExportedModel:
    identity: ModelIdentity
    files: dict[str, FileRef]
    clean_accuracy: float | None


@dataclass
class ExportSummary:
    """What :func:`export_models` wrote: the folder, its models, and the selected jobs left out (with why)."""

    folder: Path
    models: list[ExportedModel] = field(default_factory=list)
    left_out: list[tuple[ModelIdentity, str]] = field(default_factory=list)


def export_models(runs_dir: str | Path, out: str | Path, *, dataset: Any = None, backbone: Any = None,
                  regularizer: Any = None, seed: Any = None, job: Any = None, train: Any = None,
                  overwrite: bool = False, data_root: str | Path | None = None,
                  warn: Callable[[str], None] | None = None) -> ExportSummary:
    """Export the trained models of ``runs_dir`` that match the selection into the folder ``out``.

    Args:
        runs_dir: the runs directory (``gibench run --runs-dir``).
        out: the folder to create; an existing non-empty one is refused unless ``overwrite``.
        dataset, backbone, regularizer, seed, job, train: the selection, each a value or a list of values (None:
            any); the rules are :class:`gibench.submissions.model_cards.Selection`'s. Every seed of a row is
            exported unless ``seed`` says otherwise.
        overwrite: replace an existing ``out`` (atomically).
        data_root: where datasets live, for a dataset whose shape is only known by loading it.
        warn: receives a line for each damaged file skipped while reading results.

    Returns:
        An :class:`ExportSummary`: the folder, each exported model with its files, and the selected jobs that were
        left out because they have no trained weights (failed, unfinished), with the reason.

    Raises:
        ModelSelectionError: nothing matches (listing what the runs directory holds). GibenchError: ``out`` exists,
        or a checkpoint is damaged (naming it).
    """
    runs_dir, out = Path(runs_dir), Path(out)
    selection = Selection.of(dataset, backbone, regularizer, seed, job, train)
    stored, unavailable = stored_models(runs_dir)
    chosen = [m for m in stored if selection.matches(m.identity)]
    left_out = [(identity, why) for identity, why in unavailable if selection.matches(identity)]
    if not chosen:
        select_one([m.identity for m in stored], selection, str(runs_dir), unavailable)  # raises: none matches
    if out.exists() and not overwrite:
        if not out.is_dir() or any(out.iterdir()):
            raise GibenchError(f"{out} already exists; choose another folder or pass --overwrite (replaces it).")
        out.rmdir()
    runs = RunStore(runs_dir).manifest().runs
    results = job_results(runs_dir, {m.identity.job_hash for m in chosen}, warn)
    summary = ExportSummary(out, left_out=left_out)
    with atomic_folder(out, replace=overwrite) as folder:
        for model in sorted(chosen, key=lambda m: (m.identity.name, m.identity.job_hash)):
            summary.models.append(_export_one(model, folder, runs, results[model.identity.job_hash], data_root))
        atomic_write_json(folder / INDEX_FILE, _index(summary))
        atomic_write_bytes(folder / "README.md", _readme(summary).encode())
        for path in folder.rglob("*"):  # to be published as it is: readable by everyone (temporaries are 0600)
            path.chmod(0o755 if path.is_dir() else 0o644)
    return summary


def _export_one(stored: StoredModel, folder: Path, runs: list, results: Any,
                data_root: str | Path | None) -> ExportedModel:
    identity = stored.identity
    network, model = stored.load("cpu", Path(data_root) if data_root else None)
    state = network.state_dict()
    target = folder / identity.job_hash
    weights = write_weights(target / WEIGHTS_FILE, state, weights_metadata(identity, stored.job.spec, model))
    tensors, _ = read_weights(target / WEIGHTS_FILE, weights.sha256, weights.bytes)
    if tensors.keys() != state.keys() or not all(torch.equal(tensors[k], state[k].cpu()) for k in state):
        raise ModelFileError(target / WEIGHTS_FILE, "reads back different tensors from the ones written")
    card = job_card(stored, model, runs, results)
    card["files"] = {WEIGHTS_FILE: weights.to_json()}
    markdown = card_markdown(card).encode()
    atomic_write_bytes(target / CARD_MARKDOWN, markdown)
    card["files"][CARD_MARKDOWN] = FileRef(sha256_hex(markdown), len(markdown)).to_json()
    atomic_write_json(target / CARD_FILE, card)
    card_ref = FileRef(file_sha256(target / CARD_FILE), (target / CARD_FILE).stat().st_size)
    files = {name: FileRef(ref.sha256, ref.bytes, path=f"{identity.job_hash}/{name}")
             for name, ref in ((WEIGHTS_FILE, weights), (CARD_FILE, card_ref),
                               (CARD_MARKDOWN, FileRef(sha256_hex(markdown), len(markdown))))}
    clean = (card["metrics"]["clean_accuracy"] or {}).get("value")
    return ExportedModel(identity, files, clean)


def _index(summary: ExportSummary) -> dict[str, Any]:
    return {
        "format": INDEX_FORMAT,
        "schema_version": CARD_SCHEMA_VERSION,
        "gibench_version": __version__,
        "created": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"),
        "models": [{"name": m.identity.name, **m.identity.to_json(), "clean_accuracy": m.clean_accuracy,
                    "files": {name: ref.to_json() for name, ref in m.files.items()}} for m in summary.models],
    }


def _readme(summary: ExportSummary) -> str:
    lines = ["# Trained models", "",
             f"Exported by gibench {__version__}. Load one with "
             '`gibench.load_model("<this folder>", dataset=..., backbone=..., regularizer=..., seed=...)` or by '
             "`job=<hash>`; `gibench load <this folder> --job <hash>` prints its card. Every file's SHA-256 is in "
             f"`{INDEX_FILE}` and is checked before the file is read.", "",
             "| model | training | clean accuracy | job hash | card |", "|---|---|---|---|---|"]
    for m in summary.models:
        accuracy = "" if m.clean_accuracy is None else f"{m.clean_accuracy:.4f}"
        lines.append(f"| {m.identity.name} | {m.identity.train_label} | {accuracy} | `{m.identity.job_hash}` | "
                     f"[card]({m.identity.job_hash}/{CARD_MARKDOWN}) |")
    return "\n".join(lines) + "\n"
