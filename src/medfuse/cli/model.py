"""Commands over a trained run directory: ``evaluate``, ``predict``, ``explain``, ``report``,
``export`` and ``serve``."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated

import typer
from rich.table import Table

from medfuse.cli.common import OutsideOption, comma_list, console, headline, uncertainty_lines
from medfuse.errors import MedfuseError


def explain(
    run: Annotated[Path, typer.Argument(help="run directory of a trained model")],
    data: Annotated[Path, typer.Option("--data", help="CSV / Parquet table (labels optional)")],
    out: Annotated[Path, typer.Option("--out", help="output folder")],
    rows: Annotated[int, typer.Option(help="explain the first N rows")] = 4,
    threshold: Annotated[float, typer.Option(
        help="percentile (0-1) of image attribution kept for the regions")] = 0.9,
    label: Annotated[str | None, typer.Option(
        help="the class, or for a multi-label model the finding, to explain (default: the "
        "predicted class / each row's most probable finding)")] = None,
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
    result = explain_rows(clf, df, rows=list(range(n)), out_dir=out, threshold=threshold,
                          label=label)
    for r in result:
        shares = ", ".join(f"{k} {v:.0%}" for k, v in r["modalities"].items())
        if "predicted_labels" in r:  # multi-label
            found = ", ".join(r["predicted_labels"]) or "none"
            console.print(f"row {r['row']}: {r['label']} (p={r['probability']:.3f}, "
                          f"{'present' if r['present'] else 'absent'}; findings: {found}); "
                          f"{shares}")
        else:
            console.print(f"row {r['row']}: {r['prediction']} (p={r['probability']:.3f}); "
                          f"{shares}")
    console.print(
        f"written: [bold]{out / 'explanations.json'}[/] and [bold]{out / 'index.html'}[/]"
    )


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


def evaluate(
    run: Annotated[Path, typer.Argument(help="run directory of a trained model")],
    data: Annotated[Path, typer.Option("--data", help="labelled CSV / Parquet table")],
    out: Annotated[Path | None, typer.Option(help="output folder (default RUN/evaluation)")] = None,
    allow_outside_paths: OutsideOption = False,
) -> None:
    """Evaluate a saved model on a labelled table."""
    from medfuse.runs import SUBSETS_FILE, evaluate_run

    metrics = evaluate_run(run, data, out, allow_outside_paths=allow_outside_paths)
    console.print(headline(metrics))
    for line in uncertainty_lines(metrics):
        console.print(line)
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

    left_out = comma_list(without) if without else None
    preds = predict_run(run, data, out, allow_outside_paths=allow_outside_paths,
                        without=left_out)
    console.print(f"wrote {len(preds)} predictions to [bold]{out}[/]")
    if "abstain" in preds.columns:
        console.print(f"{int(preds['abstain'].sum())} of {len(preds)} rows abstain (their "
                      "conformal prediction set is not a single class): refer them")

