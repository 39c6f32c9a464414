"""Training commands: ``train`` (one split), ``cv`` (k folds), ``ablate`` (modalities), ``demo``."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any

import typer
from rich.table import Table

from medfuse.cli.common import (
    ConfigArgument,
    SetOption,
    comma_list,
    console,
    fmt,
    fold_list,
    headline,
    per_label_table,
    uncertainty_lines,
)


def train(
    config: ConfigArgument,
    out: Annotated[Path, typer.Option("--out", help="run directory to write")],
    set_: SetOption = None,
    resume: Annotated[bool, typer.Option(help="continue from OUT/checkpoints/last.ckpt")] = False,
) -> None:
    """Train on a train / valid / test split and write the run directory."""
    from medfuse.config import load_config
    from medfuse.runs import train_run

    metrics = train_run(load_config(config, set_ or []), out, resume=resume)
    if not metrics:  # another process of a DDP run: the first one reports
        return
    print_test(metrics)
    console.print(f"run directory: [bold]{out}[/]; report: [bold]{out / 'report.html'}[/]")


def print_test(metrics: dict[str, Any]) -> None:
    """The test-rows summary of a train run: headline, per-label table, uncertainty."""
    console.print(f"test: {headline(metrics)}")
    labels = per_label_table(metrics, "test rows, per label")
    if labels is not None:
        console.print(labels)
    for line in uncertainty_lines(metrics):
        console.print(line)


def cv(
    config: ConfigArgument,
    out: Annotated[Path, typer.Option("--out", help="output folder")],
    folds: Annotated[int, typer.Option(help="number of folds")] = 5,
    heads: Annotated[str | None, typer.Option(
        help="hybrid models: comma-separated heads to compare on the same folds, "
        "e.g. lr,rf,adaboost,xgboost,svm")] = None,
    resume: Annotated[bool, typer.Option(
        help="keep the folds an interrupted run of the same command finished in OUT, and "
        "continue a fold killed mid-training from its last checkpoint")] = False,
    only: Annotated[str | None, typer.Option(
        help="train only these folds (comma-separated, from 0), e.g. 2,4: run the folds in "
        "separate processes on the same OUT; the summary is written once all are finished")
    ] = None,
    set_: SetOption = None,
) -> None:
    """K-fold cross-validation, grouped by patient and near-duplicate image."""
    from medfuse.config import load_config
    from medfuse.runs import FAMILIES_FILE, HEAD_TABLE_KEYS, cv_run

    names = comma_list(heads) if heads else None
    summary = cv_run(load_config(config, set_ or []), folds, out, heads=names, resume=resume,
                     only=fold_list(only) if only is not None else None)
    if not summary:  # another process of a DDP run: the first one reports
        return
    if summary.get("partial"):
        for f in summary["folds"]:
            console.print(f"fold {f['fold']}: accuracy {fmt(f.get('accuracy'))}, roc_auc "
                          f"{fmt(f.get('roc_auc'))}, train_seconds {fmt(f.get('train_seconds'))}")
        console.print(f"fold(s) {', '.join(map(str, summary['missing']))} not finished yet: "
                      f"run them (--only, or --resume for all the rest) with the same config "
                      f"and --out {out}; cv_metrics.json is written once every fold is done.")
        return
    table = Table(title=f"{folds}-fold cross-validation")
    for col in ("metric", "mean", "std", *[f"fold {i}" for i in range(folds)]):
        table.add_column(col)
    pooled = summary.get("pooled")  # multi-label: the folds' macro means, then per label
    keys: tuple[str, ...] = ("accuracy", "balanced_accuracy", "roc_auc", "pr_auc",
                             "sensitivity", "specificity", "f1_macro", "train_seconds")
    if pooled:
        keys = ("accuracy", "subset_accuracy", "roc_auc", "roc_auc_micro", "pr_auc",
                "sensitivity", "specificity", "f1_macro", "train_seconds")
    for key in keys:
        values = [f.get(key) for f in summary["folds"]]
        table.add_row(key, fmt(summary["mean"].get(key)), fmt(summary["std"].get(key)),
                      *[fmt(v) for v in values])
    console.print(table)
    if pooled:
        ci = (pooled.get("ci95") or {}).get("roc_auc") or [None, None]
        console.print(f"pooled out of fold ({pooled['n']} rows, {pooled['n_labels']} labels): "
                      f"macro ROC AUC {fmt(pooled['roc_auc'])} (95% CI {fmt(ci[0])} - "
                      f"{fmt(ci[1])}), micro {fmt(pooled['roc_auc_micro'])}, macro PR AUC "
                      f"{fmt(pooled['pr_auc'])}, subset accuracy "
                      f"{fmt(pooled['subset_accuracy'])}")
        console.print(per_label_table(pooled, "per label, pooled out of fold"))
    if "heads" in summary:
        compare = Table(title=f"heads on the same {folds} folds (mean)")
        compare.add_column("head")
        for key in HEAD_TABLE_KEYS:
            compare.add_column(key)
        for name, s in summary["heads"].items():
            compare.add_row(name, *[fmt(s["mean"].get(k)) for k in HEAD_TABLE_KEYS])
        console.print(compare)
    fam = summary["error_families"]
    whole = fam["missed_whole"]
    console.print(
        f"errors: {fam['errors']} of {fam['rows']} rows, in {fam['families_with_errors']} of "
        f"{fam['families']} families (rows of one patient / near-duplicate group and label); "
        f"{whole['families']} families missed (mostly) whole hold {whole['errors']} of them: "
        f"{out / FAMILIES_FILE} lists them, most errors first. Check those labels before "
        "tuning for them."
    )
    print_label_issues(summary["label_issues"], out)
    for line in uncertainty_lines(summary):
        console.print(f"out of fold, {line}")
    console.print(
        f"peak RSS: {summary['peak_rss_mb']:.0f} MB; written: [bold]{out / 'cv_metrics.json'}[/]"
    )


def print_label_issues(audit: dict[str, Any], out: Path) -> None:
    """The label audit's summary: counts, families, the optimistic not-flagged metrics."""
    clean, every = audit["metrics_on_rows_not_flagged"], audit["metrics_on_all_rows"]
    cleanup = audit["cleanup"]
    models = audit.get("pooled_models") or []
    pooled = (f", {len(models)} models' probabilities pooled ("
              + ", ".join(f"{Path(m['source']).parent.name} accuracy {fmt(m['accuracy'])}"
                          for m in models) + ")") if models else ""
    console.print(
        f"label audit (cleanlab, out of fold{pooled}): {audit['issues']} of {audit['rows']} labels "
        f"look wrong, in {audit['families_with_issues']} families; a clean-up would touch "
        f"{cleanup['rows']} rows ({cleanup['families']} families mostly flagged, "
        f"{cleanup['family_rows']} rows). Accuracy on the labels as given "
        f"{fmt(every.get('accuracy'))}; on the rows not flagged {fmt(clean.get('accuracy'))} "
        f"(optimistic by construction). {out / 'label_issues.csv'} lists them, most suspect "
        "first."
    )


def audit(
    run: Annotated[Path, typer.Argument(help="output folder of 'medfuse cv' (or 'medfuse "
                                             "train': its test rows)")],
    with_: Annotated[list[Path] | None, typer.Option(
        "--with", help="the output folder of another model's 'medfuse cv' of the same table "
                       "(repeatable): its out-of-fold probabilities are pooled with RUN's")] = None,
) -> None:
    """Label audit: the labels that look wrong (cleanlab), per row and per family; report."""
    from medfuse.runs.audit import audit_run

    print_label_issues(audit_run(run, with_ or []), run)
    console.print(f"report: [bold]{run / 'report.html'}[/]")


def ablate(
    config: ConfigArgument,
    out: Annotated[Path, typer.Option("--out", help="output folder")],
    folds: Annotated[int, typer.Option(help="number of folds")] = 5,
    set_: SetOption = None,
) -> None:
    """Each single modality vs the fused model on the same folds, with CIs and a paired test."""
    from medfuse.config import load_config
    from medfuse.runs import ablate_run

    result = ablate_run(load_config(config, set_ or []), folds, out)
    table = Table(title=f"modality ablation, {folds}-fold out-of-fold predictions")
    for col in ("model", "accuracy", "roc_auc (95% CI)", "pr_auc", "sensitivity",
                "specificity"):
        table.add_column(col)
    for name, m in result["models"].items():
        ci = (m.get("ci95") or {}).get("roc_auc") or [None, None]
        table.add_row(name, fmt(m["accuracy"]),
                      f"{fmt(m['roc_auc'])} [{fmt(ci[0])}, {fmt(ci[1])}]",
                      fmt(m["pr_auc"]), fmt(m["sensitivity"]), fmt(m["specificity"]))
    console.print(table)
    c = result["comparison"]
    if c.get("multilabel"):
        console.print(f"fused vs best single on macro ROC AUC ({c['best_single']}): delta "
                      f"{c['delta_roc_auc']:+.4f}")
        per = Table(title="per label: fused vs that label's best single modality")
        for col in ("label", "best single", "delta ROC AUC (95% CI)", "DeLong p"):
            per.add_column(col)
        for label, d in c["per_label"].items():
            per.add_row(label, d["best_single"], f"{d['delta_roc_auc']:+.4f} "
                        f"[{d['delta_ci95'][0]:+.4f}, {d['delta_ci95'][1]:+.4f}]",
                        f"{d['p_value']:.2g}")
        console.print(per)
    if "p_value" in c:
        console.print(
            f"fused vs best single ({c['best_single']}): delta ROC AUC {c['delta_roc_auc']:+.4f}"
            f" (95% CI {c['delta_ci95'][0]:+.4f} to {c['delta_ci95'][1]:+.4f}), "
            f"DeLong p = {c['p_value']:.2g}; patient bootstrap p = {c['bootstrap_p_value']:.2g}"
        )
    console.print(f"written: [bold]{out / 'ablation.json'}[/]")


def demo(
    out: Annotated[Path, typer.Option(help="run directory")] = Path("runs/demo"),
    set_: SetOption = None,
) -> None:
    """The main job: train a fused image + tabular + text model on the built-in synth-derm."""
    from medfuse.config import load_config
    from medfuse.runs import train_run

    cfg = load_config("synth_derm", set_ or [])
    console.print("training a fused image + tabular + text model on synth-derm ...")
    metrics = train_run(cfg, out)
    print_test(metrics)
    console.print(f"run directory (metrics.json, predictions.csv, model): [bold]{out}[/]")
    console.print(f"report: [bold]{out / 'report.html'}[/]")
