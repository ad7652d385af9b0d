"""What names a trained model and what its card says: the row identity (:class:`ModelIdentity`), the selection rules
by which a user asks for one (:class:`Selection`), how its network is rebuilt (:class:`ModelShape`,
:func:`build_network`), the model card of a job in a runs directory (:func:`job_card`, :func:`card_markdown`) and the
index of an exported folder, ``models.json`` (:func:`read_index`). docs/models.md describes every field.

A model is rebuilt exactly as the evaluators saw it: :func:`gibench.training.models.build_model` with the job's
backbone name and resolved options, for data of the recorded shape (classes, channels, image size) and channel
statistics, then the stored tensors loaded strictly (normalization buffers included) and ``eval()``. The runs
directory's jobs learn their shape from their dataset's ``sizes()`` (or, for a dataset that does not answer, from
loading it without download); exported models carry it in their card and in the weights file's own metadata.
"""

from __future__ import annotations

__all__ = [
    "CARD_FILE", "CARD_MARKDOWN", "CARD_SCHEMA_VERSION", "INDEX_FILE", "INDEX_FORMAT", "IndexEntry", "ModelIdentity",
    "ModelSelectionError", "ModelShape", "Selection", "StoredModel", "WEIGHTS_FILE", "build_network", "card_markdown",
    "construction", "job_card", "job_results", "load_state", "read_index", "select_one", "stored_models",
    "weights_metadata",
]

import dataclasses
import json
import math
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import nn

from gibench.core.errors import GibenchError
from gibench.results.tables import collect_results, train_columns
from gibench.store.records import JobRecord
from gibench.store.runs import CHECKPOINT, JobFolder, RunStore
from gibench.submissions.model_files import FileRef, ModelFileError
from gibench.training.specs import PluginSpec, TrainConfig

WEIGHTS_FILE = "model.safetensors"
CARD_FILE = "card.json"
CARD_MARKDOWN = "card.md"
INDEX_FILE = "models.json"
INDEX_FORMAT = "gibench-models"
CARD_SCHEMA_VERSION = 1


class ModelSelectionError(GibenchError, LookupError):
    """No model, or more than one, matches a selection; the message lists the candidates."""

    def __init__(self, message: str, candidates: Sequence[ModelIdentity] = ()) -> None:
        super().__init__(message)
        self.candidates = list(candidates)


# ----------------------------------------------------------------------------------------------------------------------
# Identity and selection


@dataclass(frozen=True)
class ModelIdentity:
    """A model's row in the report (dataset, backbone and options, training config, regularizer variant) plus its
    seed and job hash: what a selection matches and what an ambiguous selection lists."""

    job_hash: str
    dataset: str            # the dataset's label, e.g. "blockmnist" or "gaussian_mixture(dim=8)"
    dataset_name: str
    backbone: str           # the backbone's label, e.g. "gibench_cnn(act=softplus)"
    backbone_name: str
    backbone_params: dict[str, Any]
    regularizer: str        # the regularizer's name, e.g. "score_matching"
    variant: str            # its label with the options given, e.g. "score_matching(weight=0.01)"
    regularizer_params: dict[str, Any]
    seed: int
    train_hash: str
    train_label: str

    @classmethod
    def of_job(cls, job: JobRecord) -> ModelIdentity:
        labels, spec = job.labels, job.spec
        dataset = spec.get("dataset", {})
        train = train_columns(spec.get("train", {}), dataset.get("validation"))
        return cls(job_hash=job.hash, dataset=labels.dataset, dataset_name=str(dataset.get("name", labels.dataset)),
                   backbone=PluginSpec.of(labels.backbone, labels.backbone_params, {}).label,
                   backbone_name=labels.backbone, backbone_params=dict(labels.backbone_params),
                   regularizer=labels.regularizer, variant=labels.variant,
                   regularizer_params=dict(labels.regularizer_params), seed=int(labels.seed),
                   train_hash=train["train_hash"], train_label=train["train_label"])

    @classmethod
    def from_json(cls, data: Any, where: str) -> ModelIdentity:
        try:
            values = {f.name: data[f.name] for f in dataclasses.fields(cls)}
            values["seed"] = int(values["seed"])
            return cls(**values)
        except (KeyError, TypeError, ValueError) as exc:
            raise ModelFileError(where, f"does not identify a model (field {exc} missing or wrong)") from None

    def to_json(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @property
    def name(self) -> str:
        """``dataset / backbone / variant / seed s``: the row and seed in words."""
        return f"{self.dataset} / {self.backbone} / {self.variant} / seed {self.seed}"

    def describe(self) -> str:
        """:attr:`name` with the training config and job hash, one line of a candidate list."""
        return f"{self.name} [{self.train_label or 'training config ' + self.train_hash}; job {self.job_hash}]"


def _values(value: Any) -> tuple[str, ...]:
    if value is None:
        return ()
    if isinstance(value, (str, int)):
        return (str(value),)
    return tuple(str(v) for v in value)


@dataclass(frozen=True)
class Selection:
    """Which models a call means. Every field is a tuple of accepted values (empty: any); a model matches when it
    matches one value of every non-empty field:

    * ``dataset``, ``backbone``, ``regularizer``: a bare name matches every model of that name whatever its options
      (``"gibench_cnn"``, ``"score_matching"``); a label with options matches exactly those options, in any order,
      spaces ignored and numbers compared by value (``"gibench_cnn(act=softplus)"``,
      ``"gradient_norm(weight=1e-3)"`` = ``"gradient_norm(weight=0.001)"``). ``regularizer`` is compared with the
      regularizer's name and its variant label, ``backbone`` and ``dataset`` with their name and label.
    * ``seed``: the training seed.
    * ``job``: the job hash or a prefix of it (at least 4 hex digits).
    * ``train``: the training config's label as the report prints it (``"3 ep · adam · lr 0.001"``) or its
      ``train_hash`` (or a prefix).
    """

    dataset: tuple[str, ...] = ()
    backbone: tuple[str, ...] = ()
    regularizer: tuple[str, ...] = ()
    seed: tuple[int, ...] = ()
    job: tuple[str, ...] = ()
    train: tuple[str, ...] = ()

    @classmethod
    def of(cls, dataset: Any = None, backbone: Any = None, regularizer: Any = None, seed: Any = None,
           job: Any = None, train: Any = None) -> Selection:
        """A selection from single values or lists (None: any)."""
        seeds = _values(seed)
        try:
            seed_values = tuple(int(s) for s in seeds)
        except ValueError:
            raise GibenchError(f"seed must be an integer, got {seed!r}") from None
        jobs = tuple(j.lower() for j in _values(job))
        short = [j for j in jobs if len(j) < 4 or any(c not in "0123456789abcdef" for c in j)]
        if short:
            raise GibenchError(f"job must be a job hash or a prefix of at least 4 hex digits, got {short[0]!r}")
        return cls(_values(dataset), _values(backbone), _values(regularizer), seed_values, jobs, _values(train))

    def __bool__(self) -> bool:
        return any(dataclasses.astuple(self))

    def matches(self, model: ModelIdentity) -> bool:
        return (_any(self.dataset, lambda v: _label_matches(v, model.dataset_name, model.dataset))
                and _any(self.backbone, lambda v: _label_matches(v, model.backbone_name, model.backbone))
                and _any(self.regularizer, lambda v: _label_matches(v, model.regularizer, model.variant))
                and _any(self.seed, lambda v: v == model.seed)
                and _any(self.job, lambda v: model.job_hash.startswith(v))
                and _any(self.train, lambda v: _squash(v) == _squash(model.train_label)
                         or (len(v) >= 4 and model.train_hash.startswith(v))))

    def describe(self) -> str:
        parts = [f"{f.name}={'|'.join(map(str, getattr(self, f.name)))}" for f in dataclasses.fields(self)
                 if getattr(self, f.name)]
        return ", ".join(parts) or "(everything)"


def _any(values: tuple, test) -> bool:
    return not values or any(test(v) for v in values)


def _squash(text: str) -> str:
    return "".join(str(text).split()).lower()


def _label_matches(value: str, name: str, label: str) -> bool:
    wanted_name, wanted = _parse_label(value)
    if wanted is None:
        return wanted_name in (_squash(name), _squash(label))
    label_name, options = _parse_label(label)
    return wanted_name == label_name and wanted == (options or frozenset())


def _parse_label(text: str) -> tuple[str, frozenset[str] | None]:
    """``"name(k=v, k2=[1, 2])"`` → ``("name", {"k=v", "k2=[1,2]"})``; a bare name → ``(name, None)``."""
    text = _squash(text)
    if "(" not in text or not text.endswith(")"):
        return text, None
    name, inner = text[: text.index("(")], text[text.index("(") + 1 : -1]
    items, depth, current = [], 0, ""
    for char in inner:
        depth += char in "([{"
        depth -= char in ")]}"
        if char == "," and depth == 0:
            items.append(current)
            current = ""
        else:
            current += char
    if current:
        items.append(current)
    return name, frozenset(_normalize_option(item) for item in items)


def _normalize_option(item: str) -> str:
    key, _, value = item.partition("=")
    try:
        number = float(value)
        value = f"{number:.10g}" if math.isfinite(number) else value
    except ValueError:
        pass
    return f"{key}={value}"


def select_one(models: Iterable[ModelIdentity], selection: Selection, source: str,
               unavailable: Sequence[tuple[ModelIdentity, str]] = ()) -> ModelIdentity:
    """The one model of ``models`` that ``selection`` matches; ModelSelectionError listing the candidates when none
    or several do. ``unavailable`` (model, why) are listed when they are what the selection meant."""
    models = list(models)
    matched = [m for m in models if selection.matches(m)]
    if len(matched) == 1:
        return matched[0]
    if not matched:
        missing = [(m, why) for m, why in unavailable if selection.matches(m)]
        if missing:
            raise ModelSelectionError(
                f"{source}: the models that match {selection.describe()} have no usable weights:\n"
                + "\n".join(f"  {m.describe()}: {why}" for m, why in missing))
        if not models:
            raise ModelSelectionError(f"{source} holds no trained model.")
        raise ModelSelectionError(
            f"no model in {source} matches {selection.describe()}. It holds {len(models)}:\n" + _listing(models),
            models)
    hint = _distinguishing(matched)
    raise ModelSelectionError(
        f"{len(matched)} models in {source} match {selection.describe()}; name one"
        + (f" (they differ in {hint})" if hint else "") + ", or pass job=<hash>:\n" + _listing(matched), matched)


def _distinguishing(models: Sequence[ModelIdentity]) -> str:
    fields = [("dataset", "dataset"), ("backbone", "backbone"), ("variant", "regularizer"), ("seed", "seed"),
              ("train_hash", "train")]
    return ", ".join(f"{option}=" for attr, option in fields if len({getattr(m, attr) for m in models}) > 1)


def _listing(models: Sequence[ModelIdentity], limit: int = 40) -> str:
    lines = [f"  {m.describe()}" for m in sorted(models, key=lambda m: (m.name, m.job_hash))]
    if len(lines) > limit:
        lines = lines[:limit] + [f"  ... and {len(lines) - limit} more"]
    return "\n".join(lines)


# ----------------------------------------------------------------------------------------------------------------------
# Rebuilding the network


@dataclass(frozen=True)
class ModelShape:
    """What :func:`gibench.training.models.build_model` takes from a dataset: classes, channels, image size
    (height, width) and the per-channel statistics of the normalization layer."""

    num_classes: int
    in_chans: int
    image_size: tuple[int, int]
    mean: tuple[float, ...]
    std: tuple[float, ...]


def construction(backbone: str, options: Mapping[str, Any], shape: ModelShape,
                 derived: Mapping[str, Any] | None = None) -> dict[str, Any]:
    """The card's ``model`` section: how the network is built, enough to rebuild it without the dataset.
    ``derived`` are options build_model adds from the data (``img_size`` of the flattening nets), shown in ``call``
    only (``options`` are the job's)."""
    kwargs = ", ".join(f"{k}={v!r}" for k, v in sorted({**(derived or {}), **options}.items()))
    return {
        "builder": "gibench.build_model",
        "backbone": backbone,
        "options": dict(options),
        "num_classes": shape.num_classes,
        "in_chans": shape.in_chans,
        "image_size": list(shape.image_size),
        "mean": list(shape.mean),
        "std": list(shape.std),
        "call": (f"Sequential(normalize=Normalize(mean={list(shape.mean)}, std={list(shape.std)}), "
                 f"backbone=gibench.create_backbone({backbone!r}, num_classes={shape.num_classes}, "
                 f"in_chans={shape.in_chans}" + (f", {kwargs}" if kwargs else "") + "))"),
        "input": (f"float32 images in [0, 1], shape (N, {shape.in_chans}, {shape.image_size[0]}, "
                  f"{shape.image_size[1]}); the first layer normalizes them"),
        "output": f"logits, shape (N, {shape.num_classes})",
    }


def _shape_of(model: Mapping[str, Any], where: str) -> tuple[str, dict[str, Any], ModelShape]:
    try:
        size = model["image_size"]
        shape = ModelShape(int(model["num_classes"]), int(model["in_chans"]), (int(size[0]), int(size[1])),
                           tuple(float(v) for v in model["mean"]), tuple(float(v) for v in model["std"]))
        return str(model["backbone"]), dict(model["options"]), shape
    except (KeyError, TypeError, ValueError, IndexError) as exc:
        raise ModelFileError(where, f"does not say how to build the model (field {exc} missing or wrong)") from None


def build_network(model: Mapping[str, Any], where: str) -> nn.Sequential:
    """The untrained network a card's ``model`` section (:func:`construction`) describes, built by
    :func:`gibench.training.models.build_model`; the caller's random state is left as it was."""
    from gibench.training.models import build_model

    backbone, options, shape = _shape_of(model, where)
    with torch.random.fork_rng(devices=[]):  # initializing the weights draws random numbers; they are overwritten
        return build_model(backbone, options, shape)  # type: ignore[arg-type]  (the fields build_model reads)


def load_state(network: nn.Module, state: Mapping[str, torch.Tensor], where: str | Path,
               device: torch.device | str = "cpu") -> nn.Module:
    """``network`` with ``state`` loaded strictly, on ``device``, in eval mode; ModelFileError naming ``where`` when
    the tensors do not fit it."""
    try:
        network.load_state_dict(state, strict=True)
    except RuntimeError as exc:
        raise ModelFileError(where, "its tensors do not fit the model its card describes: "
                             + " ".join(str(exc).split())[:400]) from None
    return network.to(device).eval()


def weights_metadata(identity: ModelIdentity, spec: Mapping[str, Any], model: Mapping[str, Any]) -> dict[str, Any]:
    """What a weights file carries about itself (so that the file alone can be loaded): only what the job hash fixes,
    so the same checkpoint always gives the same bytes."""
    return {"schema_version": CARD_SCHEMA_VERSION, "name": identity.name, "job_hash": identity.job_hash,
            "row": _row(identity), "model": dict(model), "spec": dict(spec)}


# ----------------------------------------------------------------------------------------------------------------------
# Models of a runs directory


@dataclass
class StoredModel:
    """A trained job of a runs directory, as a model: its identity, folder and record."""

    identity: ModelIdentity
    folder: JobFolder
    job: JobRecord

    def shape(self, data_root: Path | None = None) -> tuple[int, int, tuple[int, int]]:
        """(classes, channels, (height, width)) of the job's dataset, from its ``sizes()`` or, when it does not
        answer, from loading it without download."""
        return _dataset_shape(json.dumps(self.job.spec.get("dataset", {}), sort_keys=True),
                              str(data_root) if data_root else None)

    def load(self, device: torch.device | str = "cpu", data_root: Path | None = None
             ) -> tuple[nn.Module, dict[str, Any]]:
        """The model as the evaluators built it (build_model, then the checkpoint through
        :meth:`gibench.store.runs.JobFolder.load_weights`, which checks it against status.json), and its ``model``
        section (:func:`construction`)."""
        num_classes, in_chans, size = self.shape(data_root)
        backbone = self.job.spec["backbone"]
        placeholder = ModelShape(num_classes, in_chans, size, (0.0,) * in_chans, (1.0,) * in_chans)
        network = build_network(construction(backbone["name"], backbone["options"], placeholder), str(self.folder.root))
        try:
            network = self.folder.load_weights(network, "cpu")
        except FileNotFoundError:
            raise ModelFileError(self.folder.checkpoint, "the checkpoint is missing") from None
        mean = tuple(float(v) for v in network.normalize.mean.flatten().tolist())
        std = tuple(float(v) for v in network.normalize.std.flatten().tolist())
        img_size = getattr(network.backbone, "img_size", None)
        derived = {"img_size": img_size} if img_size is not None and "img_size" not in backbone["options"] else {}
        model = construction(backbone["name"], backbone["options"],
                             ModelShape(num_classes, in_chans, size, mean, std), derived)
        return network.to(device).eval(), model


_SHAPES: dict[tuple[str, str | None], tuple[int, int, tuple[int, int]]] = {}


def _dataset_shape(dataset_json: str, data_root: str | None) -> tuple[int, int, tuple[int, int]]:
    key = (dataset_json, data_root)
    if key not in _SHAPES:
        from gibench.api import registry
        from gibench.api.dataset import DataSizes

        dataset = json.loads(dataset_json)
        plugin = registry.datasets.create(dataset["name"], **dataset.get("config", {}))
        sizes = plugin.sizes()
        if sizes is None:
            from gibench.data import default_data_root

            sizes = DataSizes.of(plugin.load(Path(data_root) if data_root else default_data_root(), download=False))
        channels, height, width = sizes.shape
        _SHAPES[key] = (int(sizes.num_classes), int(channels), (int(height), int(width)))
    return _SHAPES[key]


def stored_models(runs_dir: Path) -> tuple[list[StoredModel], list[tuple[ModelIdentity, str]]]:
    """The trained jobs of ``runs_dir`` as models, and the jobs that have no usable weights (failed, unfinished),
    each with the reason. Read-only: a damaged record is skipped with a warning, as ``gibench report`` does."""
    runs_dir = Path(runs_dir)
    if not (runs_dir / "jobs").is_dir():
        raise GibenchError(f"{runs_dir} is not a runs directory (it has no jobs/ folder); pass the folder that "
                           "`gibench run --runs-dir` wrote.")
    models, unavailable = [], []
    for folder in RunStore(runs_dir, repair=False).jobs():
        job = folder.spec()
        if job is None:
            continue
        identity = ModelIdentity.of_job(job)
        status = folder.status()
        if status is None:
            unavailable.append((identity, "not trained yet (no status.json)"))
        elif status.state != "trained":
            unavailable.append((identity, f"training failed: {status.reason}"))
        elif not folder.is_trained():
            unavailable.append((identity, f"{folder.checkpoint} is missing or differs from status.json"))
        else:
            models.append(StoredModel(identity, folder, job))
    return models, unavailable


# ----------------------------------------------------------------------------------------------------------------------
# Cards


def _row(identity: ModelIdentity) -> dict[str, Any]:
    keys = ("dataset", "backbone", "backbone_params", "regularizer", "regularizer_params", "variant", "seed",
            "train_hash", "train_label")
    data = identity.to_json()
    return {key: data[key] for key in keys} | {"dataset_name": identity.dataset_name,
                                               "backbone_name": identity.backbone_name}


def job_card(stored: StoredModel, model: Mapping[str, Any], runs: Sequence[Any], results: Any) -> dict[str, Any]:
    """The card of a stored job (without its ``files``, which the exporter adds): identity, construction, training,
    metrics and provenance. ``runs`` are the manifest's run entries, ``results`` the job's rows of
    :func:`gibench.results.tables.collect_results`."""
    job, status, identity = stored.job, stored.folder.status(), stored.identity
    log = stored.folder.train_log()
    try:
        train = dataclasses.asdict(TrainConfig(**{k: tuple(v) if isinstance(v, list) else v
                                                  for k, v in job.spec.get("train", {}).items()}))
    except (TypeError, GibenchError, ValueError):
        train = dict(job.spec.get("train", {}))
    entries = log.get("entries") or []
    return {
        "schema_version": CARD_SCHEMA_VERSION,
        "name": identity.name,
        "job_hash": identity.job_hash,
        "row": _row(identity),
        "model": dict(model),
        "training": {
            "config": train,
            "spec": job.spec,
            "finished": status.finished if status else None,
            "last_log_entry": entries[-1] if entries else None,
            "warnings": log.get("warnings", []),
            "autocast": log.get("autocast"),
        },
        "metrics": _metrics(results),
        "provenance": {
            "plugins": {kind: source.to_json() for kind, source in job.plugins.items()},
            "checkpoint": {"file": CHECKPOINT, "sha256": status.checkpoint_sha256 if status else None,
                           "bytes": status.checkpoint_bytes if status else None},
            "runs": [{"run_id": r.run_id, "suite_name": r.suite_name, "suite_hash": r.suite_hash,
                      "started": r.started, "finished": r.finished, "environment": r.environment}
                     for r in runs if identity.job_hash in r.jobs],
        },
    }


def _metrics(rows: Any) -> dict[str, Any]:
    """``headline``: every evaluation's headline metric with its evaluator's version, options and plugin;
    ``clean_accuracy``: the ``accuracy`` evaluator's value (on the whole test split when it was run that way)."""
    headline = []
    for row in rows.to_dict("records") if len(rows) else []:
        if not row["headline"]:
            continue
        value = float(row["value"])
        headline.append({
            "evaluator": row["evaluator"], "version": row["evaluator_version"],
            "params": json.loads(row["evaluator_params"] or "{}"), "metric": row["metric"],
            "value": value if math.isfinite(value) else None, "higher_is_better": bool(row["higher_is_better"]),
            "status": row["status"], "plugin": {"distribution": row["evaluator_distribution"],
                                                "version": row["evaluator_plugin_version"]},
        } | ({"reason": row["reason"]} if row.get("reason") else {}))
    headline.sort(key=lambda m: (m["evaluator"], m["version"], json.dumps(m["params"], sort_keys=True)))
    accuracy = [m for m in headline if m["evaluator"] == "accuracy" and m["metric"] == "accuracy"
                and m["value"] is not None]
    accuracy.sort(key=lambda m: (m["params"].get("max_images", 0) not in (0, None), json.dumps(m["params"])))
    clean = ({"value": accuracy[0]["value"], "evaluator": "accuracy", "version": accuracy[0]["version"],
              "params": accuracy[0]["params"]} if accuracy else None)
    return {"clean_accuracy": clean, "headline": headline}


def job_results(runs_dir: Path, hashes: set[str], warn: Callable[[str], None] | None = None) -> dict[str, Any]:
    """The rows of :func:`gibench.results.tables.collect_results` for ``hashes``, by job hash (a damaged result is
    left out with a warning naming it)."""
    frame = collect_results(Path(runs_dir), job_hashes=hashes, warn=warn)
    return {h: frame[frame["job_hash"] == h] for h in hashes}


def card_markdown(card: Mapping[str, Any]) -> str:
    """The card in Markdown, for people (card.json is the record)."""
    row, model, metrics = card["row"], card["model"], card.get("metrics") or {}
    lines = [f"# {card['name']}", "",
             "| | |", "|---|---|",
             f"| dataset | `{row['dataset']}` |", f"| backbone | `{row['backbone']}` |",
             f"| regularizer | `{row['variant']}` |", f"| seed | {row['seed']} |",
             f"| training | {row['train_label']} (train hash `{row['train_hash']}`) |",
             f"| job hash | `{card['job_hash']}` |"]
    clean = metrics.get("clean_accuracy")
    if clean:
        lines.append(f"| clean accuracy | {clean['value']:.4f} (accuracy v{clean['version']}) |")
    lines += ["", "## Load it", "", "```python", "import gibench",
              f'model = gibench.load_model("EXPORT_FOLDER", job="{card["job_hash"]}")  # eval mode, images in [0, 1]',
              "```", "", "## Model", "", f"`{model['call']}`", "", f"Input: {model['input']}. Output: "
              f"{model['output']}."]
    if metrics.get("headline"):
        lines += ["", "## Headline metrics", "", "| evaluator | version | options | metric | value | status |",
                  "|---|---|---|---|---|---|"]
        for m in metrics["headline"]:
            value = "" if m["value"] is None else f"{m['value']:.6g}"
            arrow = "↑" if m["higher_is_better"] else "↓"
            lines.append(f"| {m['evaluator']} | {m['version']} | `{json.dumps(m['params'], sort_keys=True)}` | "
                         f"{m['metric']} {arrow} | {value} | {m['status']} |")
    training = card.get("training") or {}
    if training.get("config"):
        lines += ["", "## Training config", ""] + [f"- {k}: `{v}`" for k, v in sorted(training["config"].items())]
    provenance = card.get("provenance") or {}
    if provenance:
        lines += ["", "## Provenance", ""]
        lines += [f"- {kind}: {p['distribution']} {p['version']}" for kind, p in provenance.get("plugins", {}).items()]
        for run in provenance.get("runs", []):
            env = run.get("environment") or {}
            lines.append(f"- run {run['run_id'] or '?'} of suite `{run['suite_name']}` ({run['suite_hash']}), "
                         f"{run['started']}: gibench {env.get('gibench_version')} (commit {env.get('git_commit')}), "
                         f"torch {env.get('torch')}, timm {env.get('timm')}, {env.get('device')} "
                         f"({env.get('device_name')})")
    files = card.get("files") or {}
    if files:
        lines += ["", "## Files", "", "| file | SHA-256 | bytes |", "|---|---|---|"]
        lines += [f"| {name} | `{ref['sha256']}` | {ref['bytes']} |" for name, ref in sorted(files.items())]
    return "\n".join(lines) + "\n"


# ----------------------------------------------------------------------------------------------------------------------
# The index of an exported folder


@dataclass(frozen=True)
class IndexEntry:
    """One model of ``models.json``: its identity and its files (weights and card at least)."""

    identity: ModelIdentity
    files: dict[str, FileRef]


def read_index(data: Any, where: str) -> list[IndexEntry]:
    """Validate the content of a ``models.json``; ModelFileError naming ``where`` and the bad entry."""
    if not isinstance(data, Mapping) or data.get("format") != INDEX_FORMAT or not isinstance(data.get("models"),
                                                                                                 list):
        raise ModelFileError(where, f"is not a gibench model index (an object with format {INDEX_FORMAT!r} and a "
                                    "list of models)")
    entries = []
    for number, item in enumerate(data["models"]):
        at = f"{where}: models[{number}]"
        if not isinstance(item, Mapping) or not isinstance(item.get("files"), Mapping):
            raise ModelFileError(at, "is not an object with an identity and files")
        identity = ModelIdentity.from_json(item, at)
        files = {name: FileRef.from_json(ref, f"{at}.files.{name}") for name, ref in item["files"].items()}
        if WEIGHTS_FILE not in files:
            raise ModelFileError(at, f"lists no {WEIGHTS_FILE}")
        entries.append(IndexEntry(identity, files))
    return entries
