"""``gibench load SOURCE [selection] [--sha256 HEX] [--download] [--json]``: find one trained model by name in a runs
directory, an exported folder, a submission, a weights file or a URL, load it with every file checked, and print its
card (gibench.submissions.model_load)."""

from __future__ import annotations

import argparse
import json

from rich.markup import escape

from gibench.cli import _shared

__all__ = ["cmd_load"]


def cmd_load(args: argparse.Namespace) -> int:
    from gibench.submissions.model_cards import card_markdown
    from gibench.submissions.model_load import find_model

    ref = find_model(args.source, dataset=args.dataset, backbone=args.backbone, regularizer=args.regularizer,
                     seed=args.seed, job=args.job, train=args.train, sha256=args.sha256, download=args.download,
                     cache_dir=args.cache_dir, data_root=args.data_root)
    model = ref.load(args.device)  # every file is checked before it is read
    card = ref.card()
    text = json.dumps(card, indent=2, sort_keys=True, default=str) if args.json else card_markdown(card)
    _shared.stdout.print(text, markup=False, highlight=False, soft_wrap=True, end="" if text.endswith("\n") else "\n")
    parameters = sum(p.numel() for p in model.parameters())
    _shared.stderr.print(escape(f"loaded {ref.identity.name} (job {ref.identity.job_hash}) from {ref.source}: "
                                f"{parameters} parameters, eval mode, on {args.device}; every file matched its "
                                "SHA-256."), soft_wrap=True)
    return 0
