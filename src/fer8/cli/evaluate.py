"""``fer8 evaluate``: accuracy, macro-F1, confusion matrices and reliability diagrams
of a model on labelled data."""

from __future__ import annotations

import sys
from typing import TYPE_CHECKING, NoReturn

import click

from fer8.cli.common import EXIT_INPUT_FAILED, EXIT_OK, command
from fer8.options.commands import EvaluateOptions
from fer8.output import to_json
from fer8.progress import ProgressBar

if TYPE_CHECKING:
    from fer8.training.evaluation import Evaluation
    from fer8.training.evaluation_report import DatasetEvaluation


@command(EvaluateOptions)
def evaluate(options: EvaluateOptions) -> NoReturn:
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
    from fer8.training.evaluation_report import (
        DETECTED,
        LABELLED_BOXES,
        DatasetEvaluation,
        evaluation_report,
        write_report,
    )

    datasets = [
        (source, source.read(fer2013_split=options.split))
        for source in map(parse_source, options.data)
    ]
    predictor = Predictor(
        options.model.name,
        **options.classifier.to_kwargs(),
        **options.detection.detector_kwargs(),
    )
    rows: list[DatasetEvaluation] = []
    hidden = None if options.progress is None else not options.progress
    for source, dataset in datasets:
        bar = ProgressBar(f"evaluate {source.name}", len(dataset.samples), hidden=hidden)
        evaluation = run_evaluation(predictor, dataset, on_progress=bar)
        rows.append(DatasetEvaluation(source.name, DETECTED, evaluation, dataset.summary()))
        bar.close()
        boxed = sum(s.box is not None for s in dataset.samples)
        if boxed:
            bar = ProgressBar(f"evaluate {source.name} (labelled boxes)", boxed, hidden=hidden)
            evaluation = evaluate_labelled_boxes(predictor, dataset, on_progress=bar)
            rows.append(
                DatasetEvaluation(source.name, LABELLED_BOXES, evaluation, dataset.summary())
            )
            bar.close()
    report = evaluation_report(rows, predictor.model.spec.name, detector=options.detection.detector)
    if options.out is not None:
        write_report(options.out, rows, report)
    fmt = options.format or ("table" if sys.stdout.isatty() else "json")
    if fmt == "json":
        click.echo(to_json(report))
    else:
        if len(rows) == 1:
            click.echo(_per_class_table(rows[0].evaluation))
        click.echo(_datasets_table(rows))
    sys.exit(EXIT_INPUT_FAILED if any(row.evaluation.unreadable for row in rows) else EXIT_OK)


def _per_class_table(evaluation: Evaluation) -> str:
    from fer8.labels import display_name

    lines = [f"{'class':<11} {'precision':>9} {'recall':>7} {'f1':>6} {'support':>8}"]
    for label, row in evaluation.per_class().items():
        lines.append(
            f"{display_name(label):<11} {row['precision']:>9.3f} {row['recall']:>7.3f} "
            f"{row['f1']:>6.3f} {row['support']:>8d}"
        )
    return "\n".join(lines) + "\n"


def _datasets_table(rows: list[DatasetEvaluation]) -> str:
    """One row per dataset and framing: the model's headline figures.

    ``accuracy`` counts a face that was not found as wrong (``accuracy_all``); ``ECE``
    is the expected calibration error of the faces found (15 confidence bins)."""
    width = max(len("dataset"), *(len(row.dataset) for row in rows))
    lines = [
        f"{'dataset':<{width}}  {'faces':<14} {'n':>6} {'accuracy':>8} {'macro-F1':>8} "
        f"{'ECE':>6} {'missed':>6} {'unreadable':>10}"
    ]
    for row in rows:
        evaluation = row.evaluation
        lines.append(
            f"{row.dataset:<{width}}  {row.faces:<14} {evaluation.n:>6d} "
            f"{evaluation.accuracy_all:>8.1%} {evaluation.macro_f1:>8.3f} "
            f"{evaluation.ece:>6.1%} "
            f"{evaluation.no_face:>6d} {evaluation.unreadable:>10d}"
        )
    return "\n".join(lines)
