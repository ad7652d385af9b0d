"""``gibench.load_model`` and ``gibench load``: one trained model, by name, from a runs directory, an exported folder,
a submission or a URL, verified, in eval mode with its normalization layer, as the evaluators saw it
(docs/models.md, "Loading").

Sources (:func:`find_model` tells them apart in this order):

* a URL: ``http(s)://`` of a weights file (``.safetensors``) or of an index (``models.json``), fetched into the cache
  only with ``download=True`` and always checked against the ``sha256`` the call passes; ``file://`` is the local
  file it names;
* a ``.safetensors`` file: the model it holds (its metadata says how to build it); ``sha256`` is checked when given;
* a folder with ``models.json`` (an exported folder, or a submission that lists its models), or that file itself:
  every model it lists, each file checked against the SHA-256 and size the index records; ``sha256`` pins the index;
* a folder with ``submission.json`` but no ``models.json``: an error saying that the submission lists no models;
* a runs directory (a ``jobs/`` folder): every trained job, its checkpoint checked against its ``status.json``.

The selection (:class:`gibench.submissions.model_cards.Selection`) must name exactly one model; none or several is a
:class:`~gibench.submissions.model_cards.ModelSelectionError` listing the candidates.
"""

from __future__ import annotations

__all__ = ["ModelRef", "find_model", "load_model"]

import json
import re
import urllib.parse
import urllib.request
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import nn

from gibench.core.errors import GibenchError
from gibench.store.runs import RunStore
from gibench.submissions.model_cards import (
    CARD_FILE,
    INDEX_FILE,
    WEIGHTS_FILE,
    IndexEntry,
    ModelIdentity,
    Selection,
    StoredModel,
    build_network,
    job_card,
    job_results,
    load_state,
    read_index,
    select_one,
    stored_models,
)
from gibench.submissions.model_files import (
    URL_SCHEMES,
    FileRef,
    ModelFileError,
    fetch,
    file_url_path,
    read_verified,
    read_weights,
    sha256_hex,
)

_SHA256 = re.compile(r"^[0-9a-f]{64}$")


@dataclass
class ModelRef:
    """One model of a source: its identity, the source in words, and how to get its card and its network."""

    identity: ModelIdentity
    source: str
    _card: Callable[[], dict[str, Any]] = field(repr=False)
    _load: Callable[[torch.device | str], nn.Module] = field(repr=False)

    def card(self) -> dict[str, Any]:
        """The model card (docs/models.md, "The card"); for a bare weights file, what its metadata holds."""
        return self._card()

    def load(self, device: torch.device | str = "cpu") -> nn.Module:
        """The network with its weights, on ``device``, in eval mode (every file checked first)."""
        return self._load(device)


@dataclass(frozen=True)
class _Options:
    sha256: str | None
    download: bool
    cache_dir: str | Path | None
    data_root: Path | None


def find_model(source: str | Path, *, dataset: str | None = None, backbone: str | None = None,
               regularizer: str | None = None, seed: int | None = None, job: str | None = None,
               train: str | None = None, sha256: str | None = None, download: bool = False,
               cache_dir: str | Path | None = None, data_root: str | Path | None = None) -> ModelRef:
    """The one model of ``source`` that the selection names (arguments as :func:`load_model`), not loaded yet."""
    if sha256 is not None:
        sha256 = str(sha256).strip().lower()
        if not _SHA256.match(sha256):
            raise GibenchError(f"sha256 must be 64 hex digits, got {sha256!r}")
    options = _Options(sha256, bool(download), cache_dir, Path(data_root) if data_root else None)
    selection = Selection.of(dataset, backbone, regularizer, seed, job, train)
    refs, unavailable, where = _candidates(source, options)
    chosen = select_one([r.identity for r in refs], selection, where, unavailable)
    return next(r for r in refs if r.identity is chosen)


def load_model(source: str | Path, *, dataset: str | None = None, backbone: str | None = None,
               regularizer: str | None = None, seed: int | None = None, job: str | None = None,
               train: str | None = None, sha256: str | None = None, download: bool = False,
               device: torch.device | str = "cpu", cache_dir: str | Path | None = None,
               data_root: str | Path | None = None) -> nn.Module:
    """The trained model that the selection names, verified, in eval mode, with its normalization layer: the
    network the evaluators scored (see :func:`gibench.load_model` for the arguments)."""
    ref = find_model(source, dataset=dataset, backbone=backbone, regularizer=regularizer, seed=seed, job=job,
                     train=train, sha256=sha256, download=download, cache_dir=cache_dir, data_root=data_root)
    return ref.load(device)


# ----------------------------------------------------------------------------------------------------------------------
# Sources


def _candidates(source: str | Path, options: _Options
                ) -> tuple[list[ModelRef], list[tuple[ModelIdentity, str]], str]:
    text = str(source)
    scheme = urllib.parse.urlparse(text).scheme if "://" in text else ""
    if scheme == "file":
        return _candidates(Path(urllib.request.url2pathname(urllib.parse.urlparse(text).path)), options)
    if scheme:
        if scheme not in URL_SCHEMES:
            raise GibenchError(f"{text}: gibench fetches {', '.join(URL_SCHEMES)} URLs only.")
        if options.sha256 is None:
            raise GibenchError(f"{text}: pass sha256= (the SHA-256 published with the file; command line: "
                               "--sha256): gibench reads no download it cannot check.")
        if urllib.parse.urlparse(text).path.endswith(".json"):
            path = fetch(text, options.sha256, download=options.download, cache_dir=options.cache_dir,
                         suffix=".json")
            return _index_models(path, text, options.sha256, options), [], text
        path = fetch(text, options.sha256, download=options.download, cache_dir=options.cache_dir,
                     suffix=".safetensors")
        return [_file_model(path, options.sha256, text)], [], text
    path = Path(source)
    if not path.exists():
        raise GibenchError(f"{path} does not exist (a runs directory, an exported folder, a submission, a "
                           ".safetensors file or a URL was expected).")
    if path.is_file():
        if path.suffix == ".json":
            return _index_models(path, str(path.parent), options.sha256, options), [], str(path)
        return [_file_model(path, options.sha256, str(path))], [], str(path)
    if (path / INDEX_FILE).is_file():
        return _index_models(path / INDEX_FILE, str(path), options.sha256, options), [], str(path)
    if (path / "submission.json").is_file():
        raise GibenchError(f"{path} is a submission without a {INDEX_FILE}: it references no trained models. Load "
                           "them from the runs directory or the exported folder they came from (`gibench export`).")
    if (path / "jobs").is_dir():
        if options.sha256 is not None:
            raise GibenchError(f"{path} is a runs directory: sha256 applies to a file or a URL (each checkpoint is "
                               "checked against its own status.json).")
        return *_runs_models(path, options), str(path)
    raise GibenchError(f"{path} is neither a runs directory (jobs/), an exported folder ({INDEX_FILE}) nor a "
                       "submission (submission.json).")


def _runs_models(runs_dir: Path, options: _Options) -> tuple[list[ModelRef], list[tuple[ModelIdentity, str]]]:
    stored, unavailable = stored_models(runs_dir)

    def card(model: StoredModel) -> dict[str, Any]:
        _, section = model.load("cpu", options.data_root)
        runs = RunStore(runs_dir).manifest().runs
        results = job_results(runs_dir, {model.identity.job_hash})[model.identity.job_hash]
        return job_card(model, section, runs, results) | {"files": {}}

    refs = [ModelRef(m.identity, str(runs_dir), lambda m=m: card(m),
                     lambda device, m=m: m.load(device, options.data_root)[0]) for m in stored]
    return refs, unavailable


def _index_models(index: Path, base: str, sha256: str | None, options: _Options) -> list[ModelRef]:
    """The models a ``models.json`` lists; ``base`` is the folder or URL its relative paths start from."""
    data = read_verified(index, sha256, what="model index")
    try:
        entries = read_index(json.loads(data.decode("utf-8")), str(index))
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise ModelFileError(index, f"is not valid JSON ({exc})", sha256) from None
    return [ModelRef(e.identity, base, lambda e=e: _entry_card(e, base, options),
                     lambda device, e=e: _entry_load(e, base, options, device)) for e in entries]


def _local(ref: FileRef, base: str, options: _Options, suffix: str) -> tuple[Path, str]:
    """A local path holding ``ref``'s file (fetched if it is behind a URL) and its name for messages."""
    if ref.url is not None and "://" not in base and urllib.parse.urlparse(ref.url).scheme == "file":
        return file_url_path(ref.url, base), ref.url  # a relative file: URL starts from the index's folder
    if ref.url is not None:
        return fetch(ref.url, ref.sha256, ref.bytes, download=options.download, cache_dir=options.cache_dir,
                     suffix=suffix), ref.url
    if "://" in base:
        url = urllib.parse.urljoin(base, ref.path)
        return fetch(url, ref.sha256, ref.bytes, download=options.download, cache_dir=options.cache_dir,
                     suffix=suffix), url
    path = Path(base) / ref.path
    return path, str(path)


def _entry_load(entry: IndexEntry, base: str, options: _Options, device: torch.device | str) -> nn.Module:
    ref = entry.files[WEIGHTS_FILE]
    path, name = _local(ref, base, options, ".safetensors")
    tensors, metadata = read_weights(path, ref.sha256, ref.bytes)
    model = (metadata or {}).get("model")
    if metadata is not None and metadata.get("job_hash") != entry.identity.job_hash:
        raise ModelFileError(path, f"holds job {metadata.get('job_hash')}, but the index lists it for job "
                                   f"{entry.identity.job_hash}", ref.sha256, ref.bytes)
    if model is None:  # a weights file without gibench metadata: the card says how to build it
        model = _entry_card(entry, base, options).get("model")
        if model is None:
            raise ModelFileError(path, "carries no gibench metadata and its card no model section")
    return load_state(build_network(model, name), tensors, path, device)


def _entry_card(entry: IndexEntry, base: str, options: _Options) -> dict[str, Any]:
    ref = entry.files.get(CARD_FILE)
    if ref is None:
        weights = entry.files[WEIGHTS_FILE]
        path, name = _local(weights, base, options, ".safetensors")
        return _metadata_card(path, weights.sha256, name)
    path, name = _local(ref, base, options, ".json")
    data = read_verified(path, ref.sha256, ref.bytes, what="model card")
    try:
        return json.loads(data.decode("utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise ModelFileError(name, f"is not valid JSON ({exc})", ref.sha256, ref.bytes) from None


def _file_model(path: Path, sha256: str | None, name: str) -> ModelRef:
    tensors, metadata = read_weights(path, sha256)
    identity = _metadata_identity(metadata, path)

    def load(device: torch.device | str) -> nn.Module:
        return load_state(build_network(metadata["model"], name), tensors, path, device)

    return ModelRef(identity, name, lambda: _metadata_card(path, sha256, name, metadata), load)


def _metadata_identity(metadata: dict[str, Any] | None, path: Path) -> ModelIdentity:
    if not metadata or "model" not in metadata or "row" not in metadata:
        raise ModelFileError(path, "is a safetensors file without gibench's metadata, so nothing says how to build "
                                   "its model; load it from the exported folder that lists it (its card says)")
    return ModelIdentity.from_json({**metadata["row"], "job_hash": metadata.get("job_hash")}, str(path))


def _metadata_card(path: Path, sha256: str | None, name: str,
                   metadata: dict[str, Any] | None = None) -> dict[str, Any]:
    """The card of a weights file on its own: what its metadata holds (no metrics: those are in its card.json)."""
    if metadata is None:
        _, metadata = read_weights(path, sha256)
    _metadata_identity(metadata, path)
    digest = sha256 or sha256_hex(path.read_bytes())
    return {"schema_version": metadata.get("schema_version"), "name": metadata.get("name"),
            "job_hash": metadata.get("job_hash"), "row": metadata["row"], "model": metadata["model"],
            "training": {"spec": metadata.get("spec")},
            "metrics": None, "provenance": None,
            "files": {Path(urllib.parse.urlparse(name).path).name or WEIGHTS_FILE:
                      {"sha256": digest, "bytes": path.stat().st_size}}}
