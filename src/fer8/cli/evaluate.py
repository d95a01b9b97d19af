"""``fer8 evaluate``: accuracy, macro-F1, confusion matrices and reliability diagrams
of a model on labelled data."""

from __future__ import annotations

import re
import sys
from typing import Any

import click

from fer8.cli.common import EXIT_INPUT_FAILED, EXIT_OK, command, logger
from fer8.options.commands import EvaluateOptions
from fer8.output import to_json
from fer8.progress import ProgressBar


@command(EvaluateOptions)
def evaluate(options: EvaluateOptions) -> None:
    """Accuracy, macro-F1, per-class figures and a confusion matrix on labelled data.

    Each image goes through the full fer8 predict pipeline and its largest face (or
    the detected face matching a labelled box) is compared with the label; a face not
    found counts as wrong. Datasets with labelled boxes (ExpW) also get a row for the
    classifier alone on those boxes.
    """
    from fer8.pipeline.predictor import Predictor
    from fer8.training.datasets import parse_source
    from fer8.training.evaluation import evaluate as run_evaluation
    from fer8.training.evaluation import evaluate_labelled_boxes

    datasets = [
        (source, source.read(fer2013_split=options.split))
        for source in map(parse_source, options.data)
    ]
    predictor = Predictor(
        options.model.name,
        **options.classifier.to_kwargs(),
        **options.detection.detector_kwargs(),
    )
    rows = []  # (dataset name, framing, Evaluation, data summary)
    hidden = None if options.progress is None else not options.progress
    for source, dataset in datasets:
        bar = ProgressBar(f"evaluate {source.name}", len(dataset.samples), hidden=hidden)
        rows.append(
            (
                source.name,
                "detected",
                run_evaluation(predictor, dataset, on_progress=bar),
                dataset.summary(),
            )
        )
        bar.close()
        if any(s.box is not None for s in dataset.samples):
            bar = ProgressBar(
                f"evaluate {source.name} (labelled boxes)",
                sum(s.box is not None for s in dataset.samples),
                hidden=hidden,
            )
            rows.append(
                (
                    source.name,
                    "labelled boxes",
                    evaluate_labelled_boxes(predictor, dataset, on_progress=bar),
                    dataset.summary(),
                )
            )
            bar.close()
    reports = [
        {"dataset": name, "faces": framing, **evaluation.to_dict(), "data": summary}
        for name, framing, evaluation, summary in rows
    ]
    report: dict[str, Any] = (
        {**reports[0], "model": predictor.model.spec.name}
        if len(reports) == 1
        else {
            "model": predictor.model.spec.name,
            "detector": options.detection.detector,
            "datasets": reports,
        }
    )
    out_dir = options.out
    if out_dir is not None:
        from fer8.training.plots import plot_confusion, plot_reliability

        out_dir.mkdir(parents=True, exist_ok=True)
        (out_dir / "evaluation.json").write_text(to_json(report) + "\n")
        for name, framing, evaluation, _ in rows:
            picture = out_dir / (
                "confusion_matrix.png"
                if len(rows) == 1
                else f"confusion_{_file_name(name, framing)}.png"
            )
            plot_confusion(evaluation, picture, title=f"{name} ({framing})")
            if evaluation.reliability is None:  # evaluate() always measures it
                continue
            plot_reliability(
                evaluation.reliability,
                out_dir
                / (
                    "reliability.png"
                    if len(rows) == 1
                    else f"reliability_{_file_name(name, framing)}.png"
                ),
                title=f"{name} ({framing})",
            )
        logger.info(
            "wrote %s, %d confusion-matrix pictures and as many reliability diagrams",
            out_dir / "evaluation.json",
            len(rows),
        )
    fmt = options.format or ("table" if sys.stdout.isatty() else "json")
    if fmt == "json":
        click.echo(to_json(report))
    else:
        if len(rows) == 1:
            click.echo(_per_class_table(rows[0][2]))
        click.echo(_datasets_table(rows))
    sys.exit(EXIT_INPUT_FAILED if any(row[2].unreadable for row in rows) else EXIT_OK)


def _file_name(name: str, framing: str) -> str:
    return re.sub(r"[^A-Za-z0-9.@-]+", "_", f"{name}_{framing}").strip("_")


def _per_class_table(evaluation) -> str:
    from fer8.labels import display_name

    lines = [f"{'class':<11} {'precision':>9} {'recall':>7} {'f1':>6} {'support':>8}"]
    for label, row in evaluation.per_class().items():
        lines.append(
            f"{display_name(label):<11} {row['precision']:>9.3f} {row['recall']:>7.3f} "
            f"{row['f1']:>6.3f} {row['support']:>8d}"
        )
    return "\n".join(lines) + "\n"


def _datasets_table(rows) -> str:
    """One row per dataset and framing: the model's headline figures.

    ``accuracy`` counts a face that was not found as wrong (``accuracy_all``); ``ECE``
    is the expected calibration error of the faces found (15 confidence bins)."""
    width = max(len("dataset"), *(len(name) for name, *_ in rows))
    lines = [
        f"{'dataset':<{width}}  {'faces':<14} {'n':>6} {'accuracy':>8} {'macro-F1':>8} "
        f"{'ECE':>6} {'missed':>6} {'unreadable':>10}"
    ]
    for name, framing, evaluation, _ in rows:
        lines.append(
            f"{name:<{width}}  {framing:<14} {evaluation.n:>6d} "
            f"{evaluation.accuracy_all:>8.1%} {evaluation.macro_f1:>8.3f} "
            f"{evaluation.ece:>6.1%} "
            f"{evaluation.no_face:>6d} {evaluation.unreadable:>10d}"
        )
    return "\n".join(lines)
