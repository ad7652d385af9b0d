"""``gibench report [--runs-dir DIR] [--csv FILE] [--all-metrics] [--ranks] [--sanity]``: the mean over seeds with its
95 % interval and the change against erm, per table, collapsed variants apart with their reason
(:mod:`gibench.results.collapse`, by the floor the runs' recorded suites declare); the ranks and evaluator agreement,
the auxiliary models, the skipped and failed evaluations, and the ``fooled`` sanity check. ``gibench run`` prints its
results with :func:`print_frame`."""

from __future__ import annotations

import argparse
from pathlib import Path

from rich.markup import escape
from rich.table import Table

from gibench.cli import _shared
from gibench.core.errors import GibenchError

__all__ = ["cmd_report", "print_frame", "print_selections"]


def cmd_report(args: argparse.Namespace) -> int:
    from gibench.results.collapse import judged_summary, rule_of_runs
    from gibench.running.selection import read_selections

    if args.sanity:
        return _print_sanity(args.runs_dir)
    frame = _print_report(args.runs_dir, None, all_metrics=args.all_metrics)
    print_selections(read_selections(args.runs_dir, warn=_shared.warn))
    if (args.ranks or args.csv) and not frame.empty:
        rule, suites = rule_of_runs(args.runs_dir)
        stats = judged_summary(_without_sweep_points(frame)[0], rule=rule, suites=suites)  # the rows printed above
        if args.ranks:
            _print_ranks(stats)
        if args.csv:  # every row with its collapse verdict and the floor it was judged by (the collapse_* columns)
            stats.to_csv(args.csv, index=False)
            _shared.stdout.print(f"wrote {args.csv}")
    return 0


def _print_report(runs_dir: Path, job_hashes: set[str] | None, all_metrics: bool):
    """Print the report of ``runs_dir`` (its results, then the jobs whose training failed); returns the frame."""
    from gibench.results.collapse import rule_of_runs
    from gibench.results.tables import TRAINING, collect_results, failed_jobs, mixed_versions

    frame = collect_results(runs_dir, job_hashes, warn=_shared.warn)
    failed = failed_jobs(runs_dir, job_hashes, warn=lambda message: None)  # collect_results warned already
    if frame.empty and not failed:
        raise GibenchError(f"no results under {runs_dir}; run `gibench run --suite smoke --runs-dir {runs_dir}` first.")
    trained = frame[frame["evaluator"] != TRAINING]
    if not trained.empty:
        rule, suites = rule_of_runs(runs_dir, job_hashes)
        print_frame(frame, all_metrics, rule=rule, suites=suites)
    for evaluator, versions in mixed_versions(frame).items():
        _shared.warn(f"results of versions {', '.join(versions)} of {evaluator} are stored and counted together only "
                     f"within their own version (one row per version, never averaged across versions). `gibench "
                     f"doctor --runs-dir {runs_dir} --fix` moves those of other versions than the installed one aside")
    for job in failed:  # jobs whose training failed have no results: never let them silently vanish
        _shared.stdout.print(f"[red]failed[/]: {escape(job.label)} (job {job.hash}): training failed: "
                             f"{escape(job.reason)}", soft_wrap=True)
    if trained.empty:
        _shared.stdout.print(f"every job under {runs_dir} failed to train (reasons above); fix the cause and rerun the "
                             "suite with --retry-failed.", soft_wrap=True)
    return frame


def print_selections(records) -> None:
    """One table per selection record (:mod:`gibench.running.selection`): per dataset, backbone and regularizer entry,
    the mean validation accuracy at every swept value (the chosen one marked), erm's, the budget and the choice."""
    from rich import box

    for record in records:
        rule = record.get("rule", {})
        view = Table(title=escape(f"selection of suite {record.get('suite')}: the strongest setting within "
                                  f"{rule.get('max_drop')} of erm's validation accuracy (mean over sweep seeds "
                                  f"{rule.get('seeds')}; validation split {record.get('validation')})"),
                     title_justify="left", box=box.SIMPLE_HEAD, pad_edge=False)
        for name in ("dataset / backbone / regularizer", "validation accuracy by setting (* chosen)", "erm",
                     "chosen"):
            view.add_column(name, overflow="fold")
        for unit in record.get("units", []):
            curve = ", ".join(_curve_point(unit, point) for point in unit.get("curve", []))
            reference = "" if unit.get("reference") is None else f"{unit['reference']:.4f}"
            chosen = "—" if unit.get("selected") is None else f"{unit['parameter']} = {unit['selected']:g}"
            state = unit.get("state", "")
            colour = {"selected": "green", "over_budget": "yellow"}.get(state, "red")
            view.add_row(escape(f"{unit['dataset']} / {unit['backbone']} / {unit['regularizer']}"),
                         escape(f"{unit['parameter']}: {curve}"), reference,
                         f"[{colour}]{escape(chosen)} ({state})[/]")
        _shared.stdout.print(view)


def _curve_point(unit, point) -> str:
    mean = point.get("mean")
    shown = "failed" if "failed" in point.get("accuracies", []) else "—" if mean is None else f"{mean:.4f}"
    mark = "*" if point.get("value") == unit.get("selected") else ""
    return f"{point.get('value'):g} {shown}{mark}"


_INTERVALS = ("± is the half-width of the 95 % Student-t interval over seeds (none with one seed); Δ vs erm of the "
              "same table: paired t by seed when both rows have the same seeds, else Welch's t; green/red only where "
              "its interval excludes 0.")


def print_frame(frame, all_metrics: bool, rule=None, suites=()) -> None:
    """One terminal table per dataset × backbone × training config: a row per variant and metric (headlines unless
    ``all_metrics``), the mean ± its 95 % interval, the seeds, Δ vs erm ± its interval; collapsed variants last, apart,
    with their reason (``rule``, a :class:`gibench.results.collapse.CollapseRule`: the default unless given; ``suites``
    name the datasets' options). Fits 80 columns (cells wrap, never truncate)."""
    from gibench.results.collapse import CollapseRule, judged_summary
    from gibench.results.tables import TRAINING

    rule = rule or CollapseRule()
    frame, sweep_points = _without_sweep_points(frame)
    judged = judged_summary(frame, rule=rule, suites=suites)
    stats = judged[(judged["headline"] | all_metrics) & (judged["evaluator"] != TRAINING)]  # failed trainings: below
    for _, table in stats.groupby(_TABLE, sort=True):
        _shared.stdout.print(_report_table(table))
    if len(stats):
        _shared.stdout.print(_INTERVALS)
        _print_collapse(judged[judged["evaluator"] != TRAINING], rule)
    if sweep_points:
        _shared.stdout.print(f"{sweep_points} setting(s) trained only for a strength sweep are not listed: selection "
                             "scores only the setting it picks, so they have a validation accuracy and nothing on the "
                             "test split (the selection's curves list them).", soft_wrap=True)
    _print_auxiliary(frame)
    _print_not_ok(frame)


def _without_sweep_points(frame):
    """``frame`` less the results of settings trained only for a strength sweep (validation accuracy alone:
    :func:`gibench.results.tables.sweep_point_mask`), and how many such settings there were."""
    from gibench.results.tables import TABLE_KEYS, VARIANT_KEYS, complete, sweep_point_mask

    mask = sweep_point_mask(frame)
    if not mask.any():
        return frame, 0
    return frame[~mask], len(complete(frame[mask]).drop_duplicates([*TABLE_KEYS, *VARIANT_KEYS]))


def _print_collapse(stats, rule) -> None:
    """The floor the rows were judged by, and the variants it could not judge (with the reason), once per table."""
    _shared.stdout.print(f"collapse: {escape(rule.text)}. A variant below it is listed apart, last in its table, with "
                         "its reason: it is not ranked and is left out of the agreement (ρ) and the sanity gate.")
    unjudged = stats[stats["collapse"] == "not judged"].drop_duplicates([*_TABLE, "variant"])
    for _, rows in unjudged.groupby([*_TABLE, "collapse_reason"], sort=True):
        variants = ", ".join(sorted(set(rows["variant"])))
        _shared.stdout.print(f"[yellow]{escape(rows['collapse_reason'].iloc[0])}[/]: "
                             f"{_table_title(rows.iloc[0])} / {escape(variants)}")


_TABLE = ["dataset", "backbone", "backbone_params", "train_hash", "train_label"]


def _table_title(row) -> str:
    from gibench.leaderboard.build import params_label

    title = f"{row.dataset} × {row.backbone}{params_label(row.backbone_params)}"
    if row.train_label:
        title += f" · {row.train_label} (train config {row.train_hash})"
    return escape(title)


def _report_table(table) -> Table:
    """A variant's name on its own line, then one line per metric (evaluations skipped on every seed are left out:
    they are listed once, with the reason, below the tables)."""
    from rich import box

    from gibench.results.tables import metric_label

    view = Table(title=_table_title(next(table.itertuples())), title_justify="left", box=box.SIMPLE_HEAD,
                 pad_edge=False)
    for name, justify in (("variant / metric", "left"), ("mean ± 95 %", "right"), ("n", "right"),
                          ("Δ vs erm ± 95 %", "right")):
        view.add_column(name, justify=justify, overflow="fold")
    table = table[~((table["n_ok"] == 0) & (table["statuses"] == "skipped"))]
    setting = table["evaluator_version"] + " " + table["evaluator_params"]
    table = table.assign(settings=setting.groupby([table["evaluator"], table["metric"]]).transform("nunique"),
                         _not_baseline=table["regularizer"] != "erm", _collapsed=table["collapse"] == "collapsed")
    order = table.sort_values(["_collapsed", "_not_baseline", "variant"], kind="stable")
    apart = False
    for variant, rows in order.groupby("variant", sort=False):
        collapsed = bool(rows["_collapsed"].iloc[0])
        if collapsed and not apart:  # collapsed variants: apart, after the others (gibench.results.collapse)
            view.add_section()
            view.add_row("[red]collapsed[/] (not ranked)")
            apart = True
        view.add_row(f"[bold]{escape(variant)}[/]")
        if collapsed:
            view.add_row(f"  [red]{escape(rows['collapse_reason'].iloc[0])}[/]")
        for r in rows.itertuples():
            label = metric_label(r.evaluator, r.metric, r.higher_is_better)
            if r.settings > 1:  # two versions or settings of one evaluator: say which row is which
                label += f" v{r.evaluator_version} {r.evaluator_params}"
            view.add_row("  " + escape(label), _mean_text(r), f"{r.n_ok}/{r.n_seeds}", _delta_text(r))
    return view


def _mean_text(r) -> str:
    if r.n_ok == 0:
        return escape(r.statuses or "—")
    if r.ci_low != r.ci_low:  # NaN: one seed, no interval
        return f"{r.mean:.4f}"
    return f"{r.mean:.4f} ± {(r.ci_high - r.ci_low) / 2:.4f}"


def _delta_text(r) -> str:
    if r.regularizer == "erm" or r.delta_vs_erm != r.delta_vs_erm:
        return ""
    text = f"{r.delta_vs_erm:+.4f}"
    if r.delta_low == r.delta_low:
        text += f" ± {(r.delta_high - r.delta_low) / 2:.4f}"
    colour = {"better": "green", "worse": "red"}.get(r.verdict)
    return f"[{colour}]{text}[/]" if colour else text


def _print_ranks(stats) -> None:
    """Per table: each variant's rank on each headline (1 = best) with the range its intervals allow, the collapsed
    variants apart (not ranked); then the evaluator agreement (Spearman's ρ between headline metrics across the
    variants, collapsed ones left out). ``stats``: :func:`gibench.results.collapse.judged_summary`."""
    from gibench.results.tables import agreement_table, metric_label

    collapsed = stats["collapse"] == "collapsed"
    heads = stats[stats["headline"] & (stats["n_ok"] > 0) & ~collapsed]
    apart = stats[collapsed].drop_duplicates([*_TABLE, "variant"])
    agreement = agreement_table(stats)
    for _, table in heads.groupby(_TABLE, sort=True):
        view = Table("metric", "variant", "rank", "possible ranks", title=f"ranks: {_table_title(table.iloc[0])}",
                     title_justify="left")
        for column in view.columns:
            column.overflow = "fold"
        for i, (_, rows) in enumerate(table.groupby(["evaluator", "evaluator_version", "evaluator_params", "metric"],
                                                    sort=False)):
            if i:
                view.add_section()
            for j, r in enumerate(rows.sort_values("rank", kind="stable").itertuples()):
                label = metric_label(r.evaluator, r.metric, r.higher_is_better) if j == 0 else ""
                possible = f"{r.rank_best}–{r.rank_worst}" if r.rank_best != r.rank_worst else str(r.rank)
                view.add_row(escape(label), escape(r.variant), str(r.rank), f"{possible} of {len(rows)}")
        _shared.stdout.print(view)
        for r in apart.merge(table[_TABLE].drop_duplicates(), on=_TABLE).itertuples():
            _shared.stdout.print(f"not ranked: {escape(r.variant)}: {escape(r.collapse_reason)}")
        mine = agreement.merge(table[_TABLE].drop_duplicates(), on=_TABLE)
        if len(mine):
            view = Table("metric", "metric", "Spearman ρ", "variants", title=f"evaluator agreement: "
                         f"{_table_title(table.iloc[0])}", title_justify="left")
            for column in view.columns:
                column.overflow = "fold"
            for r in mine.itertuples():
                view.add_row(escape(r.metric_a), escape(r.metric_b), "—" if r.rho != r.rho else f"{r.rho:+.2f}",
                             str(r.n_variants))
            _shared.stdout.print(view)
    _shared.stdout.print("possible ranks: 1 + the variants whose 95 % interval lies entirely better, to n − those "
                         "entirely worse (a variant with one seed has no interval and may hold any rank). ρ: metrics "
                         "turned so that higher is better; — with fewer than 3 variants.")


def _print_auxiliary(frame) -> None:
    """The auxiliary models (judges, denoisers, retrained models) behind the numbers above, with their quality."""
    from gibench.results.tables import auxiliary_table

    aux = auxiliary_table(frame)
    if aux.empty:
        return
    table = Table("dataset", "evaluator", "auxiliary model", "models", "jobs", "its quality",
                  title="auxiliary models the numbers above depend on")
    for column in table.columns:
        column.overflow = "fold"
    for r in aux.itertuples():
        table.add_row(escape(r.dataset), escape(r.evaluator), escape(r.kind), str(r.models), str(r.jobs),
                      escape(r.quality))
    _shared.stdout.print(table)


def _print_not_ok(frame) -> None:
    """One line per (status, evaluator) with the datasets and the recorded reasons: skipped evaluations are expected
    (a dataset lacks a capability), failed ones are not; both are listed so that no result silently disappears."""
    from gibench.results.tables import TRAINING

    problems = frame[(frame["status"] != "ok") & (frame["evaluator"] != TRAINING)]  # failed trainings: own lines
    problems = problems.drop_duplicates(["job_hash", "evaluator"])
    for (status, evaluator), group in problems.groupby(["status", "evaluator"], sort=True):
        where = ", ".join(sorted(set(group["dataset"])))
        reasons = sorted({r for r in group.get("reason", []) if r})
        colour = "yellow" if status == "skipped" else "red"
        why = "; ".join(reasons) if reasons else ("the dataset lacks a capability it requires" if status == "skipped"
                                                   else "no reason recorded")
        _shared.stdout.print(f"[{colour}]{status}[/]: {escape(evaluator)} on {len(group)} job(s) ({escape(where)}): "
                             f"{escape(why)}" + ("" if status == "skipped" else "; see the result files under the runs "
                                                 "directory"))


def _print_sanity(runs_dir: Path) -> int:
    """The sanity gate of ``runs_dir``; a collapsed ``fooled`` row is left out of it, with its reason."""
    from gibench.leaderboard.build import params_label
    from gibench.results.collapse import dataset_classes, rule_of_runs, sanity_gate
    from gibench.results.tables import collect_results, metric_label

    frame = collect_results(runs_dir)
    rule, suites = rule_of_runs(runs_dir)
    table, collapsed = sanity_gate(frame, dataset_classes(frame["dataset"].astype(str), suites), rule)
    for r in collapsed.itertuples():
        _shared.stdout.print(f"[yellow]not gated[/]: {escape(r.variant)} on {_table_title(r)}: "
                             f"{escape(r.collapse_reason)}; a collapsed control is left out of the sanity gate "
                             f"({escape(rule.text)})")
    if table.empty and len(collapsed):
        raise GibenchError(f"the `fooled` control collapsed in every table under {runs_dir} (above): the sanity gate "
                           "has nothing to judge. Train it so that it keeps its accuracy (its reason says by how much "
                           "it missed the floor), or lower the floor with the suite key `collapse: {keep_fraction: "
                           "...}`.")
    if table.empty:
        raise GibenchError(
            f"no `fooled` and `erm` results on the same dataset, backbone and training config under {runs_dir}; add "
            "both regularizers to a suite (the `standard` suite has them) and run it."
        )
    view = Table("dataset × backbone", "control", "evaluator: metric", "erm", "fooled", "verdict",
                 title="sanity: the fooled control must score worse than erm on every saliency evaluator")
    for column in view.columns:
        column.overflow = "fold"
    for r in table.itertuples():
        verdict = "[green]ok[/]" if r.passes else "[red]FAILS: evaluator does not see the fooling[/]"
        if r.passes and r.verdict != "worse":
            verdict += " (within seed noise)" if r.delta_low == r.delta_low else " (one seed: no interval)"
        where = f"{r.dataset} × {r.backbone}{params_label(r.backbone_params)}"
        view.add_row(escape(where + (f" · {r.train_label}" if r.train_label else "")), escape(r.variant),
                     escape(metric_label(r.evaluator, r.metric, r.higher_is_better)), f"{r.erm:.4f}", f"{r.fooled:.4f}",
                     verdict)
    _shared.stdout.print(view)
    return 0 if table["passes"].all() else 1

