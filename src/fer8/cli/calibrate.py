"""``fer8 calibrate``: fit a model's temperature on labelled data and write it into a
copy of the model file."""

from __future__ import annotations

from typing import Any

import click

from fer8.cli.common import command
from fer8.options.commands import CalibrateOptions
from fer8.progress import ProgressBar


@command(CalibrateOptions)
def calibrate(options: CalibrateOptions) -> None:
    """Fit the temperature that makes a model's confidences match its accuracy.

    Every image goes through the fer8 predict pipeline, as in fer8 evaluate; the
    temperature that minimises the negative log-likelihood of the true classes is
    stored in the new model file, which every runtime and fer8 export then apply. It
    changes no label, only the confidences. With --by quality a rule that gives each
    face its own temperature, from its crop, is fitted and stored too (see
    docs/training.md). Prints each dataset's expected calibration
    error (15 bins) before (the model as given, with its own temperature, as fer8
    evaluate measures it) and after. A fitted temperature that would raise the error
    (averaged over the datasets) is not kept: the model's own stays, and a warning
    gives both figures.
    """
    from fer8.models.calibration import calibrate_model_file
    from fer8.models.modelfile import read_model_file
    from fer8.models.registry import resolve_model
    from fer8.pipeline.predictor import Predictor
    from fer8.training.datasets import parse_source
    from fer8.training.evaluation import pooled_answers

    if options.out.exists() and not options.force:
        raise click.BadParameter(
            f"{options.out} exists; add --force to replace it", param_hint="--out"
        )
    source = resolve_model(options.model.name)
    datasets = [
        (spec.name, spec.read(fer2013_split=options.split))
        for spec in map(parse_source, options.data)
    ]
    # Fitted on the network's own probabilities: a model that already has a temperature
    # gets a new one, not one on top of it.
    network = read_model_file(source).with_temperature(1.0)
    predictor = Predictor(
        network, **options.classifier.to_kwargs(), **options.detection.detector_kwargs()
    )
    answers = pooled_answers(
        predictor,
        datasets,
        on_progress=lambda name, total: ProgressBar(f"calibrate on {name}", total),
    )
    summary = calibrate_model_file(
        source,
        options.out,
        answers.probabilities,
        answers.truth,
        answers.groups,
        fitted_on=", ".join(name for name, _ in datasets),
        measures=answers.measures,
        by=options.by,
    )
    click.echo(_calibration_table(summary))
    rule = summary.get("temperature_rule")
    if rule is not None:
        terms = " ".join(f"{w:+.4f} x {m}" for m, w in zip(rule["measures"], rule["weights"]))
        click.echo(f"fer8: temperature rule 1/T = {rule['intercept']:.4f} {terms}", err=True)
    click.echo(f"fer8: temperature {summary['temperature']:.4f}; model: {options.out}", err=True)


def _calibration_table(summary: dict[str, Any]) -> str:
    rows = [*summary["per_dataset"].items(), ("all (pooled)", summary)]
    width = max(len("dataset"), *(len(name) for name, _ in rows))
    lines = [
        f"{'dataset':<{width}}  {'n':>6} {'ECE before':>10} {'ECE after':>9} "
        f"{'NLL before':>10} {'NLL after':>9}"
    ]
    for name, row in rows:
        lines.append(
            f"{name:<{width}}  {row['n']:>6d} {row['ece_before']:>10.1%} "
            f"{row['ece_after']:>9.1%} {row['nll_before']:>10.4f} "
            f"{row['nll_after']:>9.4f}"
        )
    return "\n".join(lines)
