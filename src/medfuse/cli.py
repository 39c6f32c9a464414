"""The ``medfuse`` command line (typer + rich). It calls the public API only.

Errors medfuse raises on purpose (:class:`~medfuse.errors.MedfuseError`), and
operating-system errors on the files a user names (:class:`OSError`), are printed
as one clear message and exit with status 2, without a stack trace.
"""

from __future__ import annotations

import json
import logging
import sys
import time
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.console import Console
from rich.logging import RichHandler
from rich.markup import escape
from rich.table import Table

from medfuse.errors import MedfuseError

app = typer.Typer(
    name="medfuse",
    help="Fused classifiers over medical images, tabular patient data and clinical text.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)
console = Console(soft_wrap=True)
err_console = Console(stderr=True, soft_wrap=True)

SetOption = Annotated[
    list[str] | None,
    typer.Option("--set", help="override a config key, e.g. --set train.max_epochs=3"),
]
OutsideOption = Annotated[bool, typer.Option(
    "--allow-outside-paths",
    help="accept image paths outside the table's folder (absolute paths elsewhere, '..'); "
    "refused by default")]


@app.callback()
def _main(verbose: Annotated[bool, typer.Option("--verbose", "-v")] = False) -> None:
    from medfuse.distributed import is_primary

    level = logging.DEBUG if verbose else logging.INFO
    logging.basicConfig(
        # the other processes of a DDP run repeat the first one's messages: warnings only
        level=level if is_primary() else max(level, logging.WARNING),
        format="%(message)s",
        handlers=[RichHandler(console=err_console, show_path=False, show_time=False)],
    )
    if not verbose:  # library chatter at INFO (e.g. matplotlib's categorical-units notes)
        for name in ("matplotlib", "PIL", "urllib3", "httpx"):
            logging.getLogger(name).setLevel(logging.WARNING)


@app.command()
def datasets() -> None:
    """List the built-in datasets."""
    from medfuse.data import list_datasets

    table = Table(title="built-in datasets")
    for col in ("name", "modalities", "rows", "label", "source"):
        table.add_column(col, no_wrap=col in ("name", "modalities"))
    for d in list_datasets():
        table.add_row(d.name, "+".join(d.modalities), str(d.n_rows), d.label, d.source)
    console.print(table)
    for d in list_datasets():
        console.print(f"[bold]{d.name}[/]: {escape(d.description)}")


@app.command()
def prepare(
    name: Annotated[str, typer.Argument(help="built-in dataset name (see `medfuse datasets`)")],
    out: Annotated[Path, typer.Option("--out", help="output folder")],
    n_rows: Annotated[int | None, typer.Option(help="synth-derm: number of rows")] = None,
    image_size: Annotated[int | None, typer.Option(help="synth-derm: image size (px)")] = None,
    seed: Annotated[int | None, typer.Option(help="synth-derm: random seed")] = None,
) -> None:
    """Write a built-in dataset as OUT/data.csv (+ image files) in the generic format."""
    from medfuse.data import prepare_dataset

    options = {
        k: v for k, v in {"n_rows": n_rows, "image_size": image_size, "seed": seed}.items()
        if v is not None
    }
    t0 = time.perf_counter()
    csv = prepare_dataset(name, out, **options)
    n = sum(1 for _ in csv.open()) - 1
    console.print(f"wrote {n} rows to [bold]{csv}[/] in {time.perf_counter() - t0:.1f} s")


def _validate_config(config: str, overrides: list[str] | None) -> dict[str, Any]:
    from medfuse.config import load_config
    from medfuse.data import group_labels, load_data

    cfg = load_config(config, overrides or [])
    df, report = load_data(cfg.data)
    console.print(f"validation: {report.summary()}")
    for problem in report.problems[:10]:
        console.print(f"  - {escape(str(problem))}")
    if len(report.problems) > 10:
        console.print(f"  ... and {len(report.problems) - 10} more")
    _, split = group_labels(df, cfg.data)
    console.print(
        f"groups: {split.n_groups} (near-duplicate image groups: {split.duplicate_groups}, "
        f"holding {split.duplicate_images} images)"
    )
    counts = df[cfg.data.target].value_counts().sort_index()
    console.print("classes: " + ", ".join(f"{k}={v}" for k, v in counts.items()))
    return {"validation": report.to_dict(), "groups": split.to_dict()}


@app.command()
def validate(
    config: Annotated[str, typer.Argument(help="config name from configs/ or a YAML path")],
    set_: SetOption = None,
    out: Annotated[Path | None, typer.Option(help="write the findings as JSON here")] = None,
) -> None:
    """Check a config and its data (columns, files, numbers, texts, duplicates)."""
    result = _validate_config(config, set_)
    if out is not None:
        out.parent.mkdir(parents=True, exist_ok=True)
        out.write_text(json.dumps(result, indent=1))
        console.print(f"findings written to [bold]{out}[/]")


def _headline(metrics: dict[str, Any]) -> str:
    keys = ("n", "accuracy", "balanced_accuracy", "roc_auc", "pr_auc", "sensitivity",
            "specificity", "train_seconds", "peak_rss_mb")
    parts = []
    for k in keys:
        v = metrics.get(k)
        if v is not None:
            parts.append(f"{k}={v:.4f}" if isinstance(v, float) else f"{k}={v}")
    return ", ".join(parts)


@app.command()
def train(
    config: Annotated[str, typer.Argument(help="config name from configs/ or a YAML path")],
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
    console.print(f"test: {_headline(metrics)}")
    console.print(f"run directory: [bold]{out}[/]; report: [bold]{out / 'report.html'}[/]")


def _comma_list(text: str) -> list[str]:
    """``"lr, rf,"`` -> ``["lr", "rf"]``."""
    return [part.strip() for part in text.split(",") if part.strip()]


def _fold_list(text: str) -> list[int]:
    """``"2,4"`` -> ``[2, 4]``; anything else is a clean parameter error."""
    try:
        folds = [int(part) for part in _comma_list(text)]
    except ValueError:
        folds = []
    if not folds:
        raise typer.BadParameter(f"{text!r}: give fold numbers separated by commas, e.g. 2,4",
                                 param_hint="--only")
    return folds


@app.command()
def cv(
    config: Annotated[str, typer.Argument(help="config name from configs/ or a YAML path")],
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

    names = _comma_list(heads) if heads else None
    summary = cv_run(load_config(config, set_ or []), folds, out, heads=names, resume=resume,
                     only=_fold_list(only) if only is not None else None)
    if not summary:  # another process of a DDP run: the first one reports
        return
    if summary.get("partial"):
        for f in summary["folds"]:
            console.print(f"fold {f['fold']}: accuracy {_fmt(f.get('accuracy'))}, roc_auc "
                          f"{_fmt(f.get('roc_auc'))}, train_seconds {_fmt(f.get('train_seconds'))}")
        console.print(f"fold(s) {', '.join(map(str, summary['missing']))} not finished yet: "
                      f"run them (--only, or --resume for all the rest) with the same config "
                      f"and --out {out}; cv_metrics.json is written once every fold is done.")
        return
    table = Table(title=f"{folds}-fold cross-validation")
    for col in ("metric", "mean", "std", *[f"fold {i}" for i in range(folds)]):
        table.add_column(col)
    for key in ("accuracy", "balanced_accuracy", "roc_auc", "pr_auc", "sensitivity",
                "specificity", "f1_macro", "train_seconds"):
        values = [f.get(key) for f in summary["folds"]]
        table.add_row(key, _fmt(summary["mean"].get(key)), _fmt(summary["std"].get(key)),
                      *[_fmt(v) for v in values])
    console.print(table)
    if "heads" in summary:
        compare = Table(title=f"heads on the same {folds} folds (mean)")
        compare.add_column("head")
        for key in HEAD_TABLE_KEYS:
            compare.add_column(key)
        for name, s in summary["heads"].items():
            compare.add_row(name, *[_fmt(s["mean"].get(k)) for k in HEAD_TABLE_KEYS])
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
    console.print(
        f"peak RSS: {summary['peak_rss_mb']:.0f} MB; written: [bold]{out / 'cv_metrics.json'}[/]"
    )


def _fmt(value: Any) -> str:
    return "-" if value is None else f"{value:.4f}"


@app.command()
def ablate(
    config: Annotated[str, typer.Argument(help="config name from configs/ or a YAML path")],
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
        table.add_row(name, _fmt(m["accuracy"]),
                      f"{_fmt(m['roc_auc'])} [{_fmt(ci[0])}, {_fmt(ci[1])}]",
                      _fmt(m["pr_auc"]), _fmt(m["sensitivity"]), _fmt(m["specificity"]))
    console.print(table)
    c = result["comparison"]
    if "p_value" in c:
        console.print(
            f"fused vs best single ({c['best_single']}): delta ROC AUC {c['delta_roc_auc']:+.4f}"
            f" (95% CI {c['delta_ci95'][0]:+.4f} to {c['delta_ci95'][1]:+.4f}), "
            f"DeLong p = {c['p_value']:.2g}; patient bootstrap p = {c['bootstrap_p_value']:.2g}"
        )
    console.print(f"written: [bold]{out / 'ablation.json'}[/]")


@app.command()
def explain(
    run: Annotated[Path, typer.Argument(help="run directory of a trained model")],
    data: Annotated[Path, typer.Option("--data", help="CSV / Parquet table (labels optional)")],
    out: Annotated[Path, typer.Option("--out", help="output folder")],
    rows: Annotated[int, typer.Option(help="explain the first N rows")] = 4,
    threshold: Annotated[float, typer.Option(
        help="percentile (0-1) of image attribution kept for the regions")] = 0.9,
    allow_outside_paths: OutsideOption = False,
) -> None:
    """Explain predictions: image regions, words, tabular features, modality shares."""
    from medfuse.data import load_table
    from medfuse.explain import explain as explain_rows
    from medfuse.runs import load_model

    clf = load_model(run)
    spec = clf.input_spec()
    if allow_outside_paths:
        spec = spec.model_copy(update={"allow_outside_paths": True})
    df, _ = load_table(data, spec, check_images="exists", require_target=False,
                       training=False)
    n = min(rows, len(df))
    result = explain_rows(clf, df, rows=list(range(n)), out_dir=out, threshold=threshold)
    for r in result:
        shares = ", ".join(f"{k} {v:.0%}" for k, v in r["modalities"].items())
        console.print(f"row {r['row']}: {r['prediction']} (p={r['probability']:.3f}); {shares}")
    console.print(
        f"written: [bold]{out / 'explanations.json'}[/] and [bold]{out / 'index.html'}[/]"
    )


@app.command()
def serve(
    run: Annotated[Path, typer.Argument(help="run directory of a trained model")],
    host: Annotated[str, typer.Option(help="interface to listen on")] = "127.0.0.1",
    port: Annotated[int, typer.Option(help="TCP port")] = 8000,
    token: Annotated[str | None, typer.Option(
        help="require 'Authorization: Bearer TOKEN' on /api/* (or set MEDFUSE_TOKEN)")] = None,
    audit_db: Annotated[Path | None, typer.Option(
        help="SQLite audit log (default RUN/audit.sqlite)")] = None,
    max_upload_mb: Annotated[float, typer.Option(help="largest request body")] = 20.0,
    max_pixels: Annotated[int, typer.Option(
        help="largest image (width x height) accepted; larger is refused as a "
        "decompression bomb")] = 50_000_000,
) -> None:
    """Start the clinician web app and the REST API over a saved model (offline)."""
    from medfuse.runs import load_model
    from medfuse.serve import serve as run_server

    load_model(run)  # fail fast, with a clean message, on a bad run directory
    console.print(f"serving [bold]{run}[/] at http://{host}:{port}/ (API docs: /docs)")
    run_server(run, host=host, port=port, token=token, audit_db=audit_db,
               max_upload_mb=max_upload_mb, max_pixels=max_pixels, log_level="warning")


@app.command()
def export(
    run: Annotated[Path, typer.Argument(help="run directory of a trained fused model")],
    format_: Annotated[str, typer.Option("--format", help="export format")] = "onnx",
    out: Annotated[Path | None, typer.Option(help="output file (default RUN/model.onnx)")] = None,
) -> None:
    """Export a fused model to ONNX; 'medfuse serve' then runs it with onnxruntime."""
    from medfuse.errors import check_option
    from medfuse.export import export_onnx

    check_option("format", format_, ("onnx",))
    console.print(f"written: [bold]{export_onnx(run, out)}[/]")


@app.command()
def report(
    run: Annotated[Path, typer.Argument(help="run directory of 'medfuse train'")],
) -> None:
    """Rebuild RUN/report.html from the run directory."""
    from medfuse.evaluation.report import build_report

    if not (run / "metrics.json").is_file():
        raise MedfuseError(
            f"{run} has no metrics.json: pass the --out folder of 'medfuse train'."
        )
    console.print(f"report: [bold]{build_report(run)}[/]")


@app.command()
def evaluate(
    run: Annotated[Path, typer.Argument(help="run directory of a trained model")],
    data: Annotated[Path, typer.Option("--data", help="labelled CSV / Parquet table")],
    out: Annotated[Path | None, typer.Option(help="output folder (default RUN/evaluation)")] = None,
    allow_outside_paths: OutsideOption = False,
) -> None:
    """Evaluate a saved model on a labelled table."""
    from medfuse.runs import SUBSETS_FILE, evaluate_run

    metrics = evaluate_run(run, data, out, allow_outside_paths=allow_outside_paths)
    console.print(_headline(metrics))
    target = out or run / "evaluation"
    subsets = target / SUBSETS_FILE
    if subsets.is_file():
        table = Table(title="modality subsets (the others left out of every row)")
        for col in ("modalities used", "accuracy", "roc_auc"):
            table.add_column(col)
        for name, m in json.loads(subsets.read_text())["removed"].items():
            auc = m.get("roc_auc")
            table.add_row(name, f"{m['accuracy']:.4f}", "-" if auc is None else f"{auc:.4f}")
        console.print(table)
    console.print(f"written: [bold]{target / 'metrics.json'}[/]"
                  + (f" and [bold]{subsets}[/]" if subsets.is_file() else ""))


@app.command()
def predict(
    run: Annotated[Path, typer.Argument(help="run directory of a trained model")],
    data: Annotated[Path, typer.Option("--data", help="CSV / Parquet table (labels optional)")],
    out: Annotated[Path, typer.Option("--out", help="predictions CSV to write")],
    allow_outside_paths: OutsideOption = False,
    without: Annotated[str | None, typer.Option(
        help="comma-separated modalities to leave out of every row (image, tabular, text; "
             "their columns may be absent); models trained with model.modality_dropout > 0")
    ] = None,
) -> None:
    """Predict every row of a table."""
    from medfuse.runs import predict_run

    left_out = _comma_list(without) if without else None
    preds = predict_run(run, data, out, allow_outside_paths=allow_outside_paths,
                        without=left_out)
    console.print(f"wrote {len(preds)} predictions to [bold]{out}[/]")


@app.command()
def benchmark(
    out: Annotated[Path, typer.Option("--out", help="output folder (results.json, results.md)")],
    quick: Annotated[bool, typer.Option(
        help="small sizes (a few rows, one epoch): about two minutes")] = False,
    only: Annotated[str | None, typer.Option(
        help="comma-separated sections: gemm, extraction, training, datasets, serve_load")
    ] = None,
) -> None:
    """Measure medfuse against plain PyTorch / scikit-learn peers and the machine's GEMM peak."""
    from medfuse.benchmark import check_sections, run_benchmark

    sections = check_sections(_comma_list(only) if only else None)
    t0 = time.perf_counter()
    with console.status("benchmark running ...") as status:
        def log(message: str) -> None:
            console.print(f"[dim]{time.perf_counter() - t0:6.0f} s[/]  {message}")
            status.update(f"benchmark: {message}")

        results = run_benchmark(out, quick=quick, sections=sections, log=log)
    table = Table(title="targets (issue 10)")
    for col in ("target", "measured", "threshold", "met"):
        table.add_column(col)
    for t in results["targets"]:
        value = t["value"]
        shown = "-" if value is None else f"{value:.3f}" if isinstance(value, float) else str(value)
        met = {True: "[green]yes[/]", False: "[red]no[/]", None: "-"}[t["met"]]
        table.add_row(t["target"], shown, f"{t['op']} {t['threshold']}", met)
    console.print(table)
    console.print(f"results: [bold]{out / 'results.md'}[/] and [bold]{out / 'results.json'}[/]")


@app.command()
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
    console.print(f"test: {_headline(metrics)}")
    console.print(f"run directory (metrics.json, predictions.csv, model): [bold]{out}[/]")
    console.print(f"report: [bold]{out / 'report.html'}[/]")


def main() -> None:
    """Console-script entry point: clean messages for medfuse's own errors."""
    try:
        app()
    except MedfuseError as exc:
        err_console.print(f"[bold red]error:[/] {escape(str(exc))}", highlight=False)
        sys.exit(2)
    except OSError as exc:  # a file the user named: missing, a folder, not readable, disk full
        err_console.print(f"[bold red]error:[/] {escape(str(exc))}", highlight=False)
        sys.exit(2)


if __name__ == "__main__":
    main()
