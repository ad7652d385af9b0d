"""The strength each regularizer was compared at, and the validation curve it was chosen from, as one markdown table
per selection record of a runs directory, for docs/benchmarks.md.

Run (seconds; reads the store's selection records, trains nothing)::

    python benchmarks/selection_table.py --runs-dir RUNS [--markdown out.md]

A row is one selection unit (dataset × backbone × training config × regularizer entry): its swept parameter, the
validation accuracy at every swept value (mean over the sweep's seeds; ``failed`` where the training failed, ``–``
where nothing is stored), erm's validation accuracy beside it, the value chosen and why. ``edge`` marks a choice at
the strongest value swept (a stronger one may also be within the budget: the sweep did not find the operating
point's limit); ``weakest`` a choice at the weakest value swept that is already more than the budget below erm
(the rule keeps it, but the regularizer was not compared at matched accuracy). The records are those ``gibench run``
writes (``RUNS/selections/<suite>-<hash>.json``, :mod:`gibench.running.selection`).
"""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

from gibench.running.selection import read_selections


def _number(value: float) -> str:
    return f"{value:g}"


def _accuracy(point: dict[str, Any]) -> str:
    mean = point.get("mean")
    if isinstance(mean, (int, float)):
        return f"{mean:.4f}"
    states = sorted({a for a in point.get("accuracies", []) if isinstance(a, str)})
    return "/".join(states) if states else "–"


def _note(unit: dict[str, Any]) -> str:
    values = [point["value"] for point in unit["curve"]]
    selected = unit.get("selected")
    if selected is None or not values:
        return unit.get("state", "")
    if selected == max(values):
        return "edge"
    budget, weakest = unit.get("budget"), unit["curve"][values.index(min(values))]
    if selected == min(values) and isinstance(weakest.get("mean"), (int, float)) and budget is not None \
            and weakest["mean"] < budget:
        return "weakest"
    return ""


def selection_markdown(record: dict[str, Any]) -> str:
    """One markdown table of a selection record."""
    rule, validation = record.get("rule", {}), record.get("validation", {})
    lines = [f"Suite `{record.get('suite')}` (hash {str(record.get('suite_hash'))[:16]}): the strongest setting whose "
             f"mean validation accuracy over sweep seeds {rule.get('seeds')} is within {rule.get('max_drop')} of "
             f"erm's; validation split {validation}.", "",
             "| dataset | backbone | regularizer | parameter | validation accuracy by value | erm | chosen | note |",
             "| --- | --- | --- | --- | --- | --- | --- | --- |"]
    for unit in record["units"]:
        curve = ", ".join(f"{_number(p['value'])}: {_accuracy(p)}" for p in unit["curve"])
        reference = unit.get("reference")
        erm = f"{reference:.4f}" if isinstance(reference, (int, float)) else "–"
        chosen = _number(unit["selected"]) if unit.get("selected") is not None else unit.get("state", "–")
        cells = [unit["dataset"], unit["backbone"], unit["regularizer"], unit["parameter"], curve, erm, chosen,
                 _note(unit)]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--runs-dir", type=Path, required=True)
    parser.add_argument("--markdown", type=Path, help="also write the tables to this file")
    args = parser.parse_args()
    records = read_selections(args.runs_dir, warn=print)
    if not records:
        raise SystemExit(f"{args.runs_dir} holds no selection records (selections/*.json): run a suite that "
                         "selects (`select: {rule: max_drop, ...}`) first.")
    text = "\n".join(selection_markdown(record) for record in records)
    print(text)
    if args.markdown:
        args.markdown.write_text(text)


if __name__ == "__main__":
    main()
