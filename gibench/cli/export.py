"""``gibench export --out DIR [--runs-dir DIR] [selection] [--overwrite]``: pack a runs directory's trained models
(every seed of every selected row) into a folder: weights as safetensors, a model card per model, ``models.json``
with the SHA-256 of every file (gibench.submissions.model_export)."""

from __future__ import annotations

import argparse

from rich.markup import escape
from rich.table import Table

from gibench.cli import _shared

__all__ = ["cmd_export"]


def cmd_export(args: argparse.Namespace) -> int:
    from gibench.submissions.model_export import export_models

    summary = export_models(args.runs_dir, args.out, dataset=args.dataset, backbone=args.backbone,
                            regularizer=args.regularizer, seed=args.seed, job=args.job, train=args.train,
                            overwrite=args.overwrite, data_root=args.data_root, warn=_shared.warn)
    table = Table("model", "training", "clean accuracy", "job hash", "weights SHA-256", title=f"exported to {args.out}")
    for column in table.columns:
        column.overflow = "fold"
    for model in summary.models:
        weights = model.files["model.safetensors"]
        accuracy = "" if model.clean_accuracy is None else f"{model.clean_accuracy:.4f}"
        table.add_row(escape(model.identity.name), escape(model.identity.train_label), accuracy,
                      model.identity.job_hash, weights.sha256[:16] + "…")
    _shared.stdout.print(table)
    for identity, why in summary.left_out:
        _shared.warn(f"left out {identity.describe()}: {why}")
    _shared.stdout.print(escape(f"{len(summary.models)} model(s) in {summary.folder}; models.json lists every file "
                                "with its SHA-256. Load one with gibench.load_model(folder, job=<hash>) or "
                                f"`gibench load {summary.folder} --job <hash>`."), soft_wrap=True)
    return 0
