"""``fer8 quantize``: add an int8 network, calibrated on faces, to a copy of a model file."""

from __future__ import annotations

from pathlib import Path

import click

from fer8.cli.common import cli, detection_options, handle_errors, install_command
from fer8.progress import ProgressBar


@cli.command()
@click.option(
    "--model",
    "model",
    metavar="NAME|PATH",
    help="Model name or .fer8 file to quantize (default: the bundled model).",
)
@click.option(
    "--data",
    "sources",
    required=True,
    multiple=True,
    metavar="PATH[@SPLIT]",
    help="Photos or face crops to calibrate on, as for fer8 train (labels are not "
    "used): faces like the ones the model will see, e.g. its training data. Repeat "
    "for several datasets: the faces are drawn from each in turn.",
)
@click.option(
    "--out",
    "out_path",
    required=True,
    type=click.Path(dir_okay=False, path_type=Path),
    help="The model file to write: the input's content plus the int8 network.",
)
@click.option("--force", is_flag=True, help="Replace --out if it exists.")
@click.option(
    "--faces",
    type=click.IntRange(min=1),
    default=1000,
    show_default=True,
    help="Faces to calibrate on, drawn at random (seed 0) across the datasets.",
)
@click.option(
    "--method",
    type=click.Choice(["minmax", "percentile", "entropy"]),
    default="percentile",
    show_default=True,
    help="How each activation's range is chosen from the calibration faces.",
)
@click.option(
    "--percentile",
    type=click.FloatRange(90, 100),
    default=99.999,
    show_default=True,
    help="For --method percentile: the share of absolute values the range covers.",
)
@click.option(
    "--float-first",
    type=click.IntRange(min=0),
    default=6,
    show_default=True,
    help="Convolutions at the input left in float (6: FaceNet's stem); 0 quantizes all.",
)
@click.option(
    "--float-last/--int8-last",
    default=True,
    show_default=True,
    help="Leave the classifier (the last layer) in float.",
)
@click.option(
    "--reduce-range/--full-range",
    default=False,
    show_default=True,
    help="Weights in 7 bits instead of 8: CPUs without VNNI (AVX2 only) then cannot "
    "saturate a product, but every CPU answers further from the float network.",
)
@click.option(
    "--cache",
    type=click.Path(file_okay=False, path_type=Path),
    default=None,
    help="Crop cache folder, shared with fer8 train (default: crops/ in the fer8 cache).",
)
@detection_options
@handle_errors
def quantize(
    model: str | None,
    sources: tuple[str, ...],
    out_path: Path,
    force: bool,
    faces: int,
    method: str,
    percentile: float,
    float_first: int,
    float_last: bool,
    reduce_range: bool,
    cache: Path | None,
    detection: dict,
) -> None:
    """Add an int8 network to a copy of a model file; fer8 predict then runs it.

    Faces are framed by fer8's own pipeline, as fer8 train and fer8 predict frame
    them (detected, aligned, masked when the model masks), and ONNX Runtime measures
    each layer's activations on them. The int8 network is stored beside the float one,
    which training and explanations keep reading. Needs the train extra (the onnx
    package); running the new file does not. Prints how often the int8 network gives
    the float network's label on the calibration faces; measure accuracy with
    fer8 evaluate --model OUT.
    """
    import numpy as np

    from fer8.models.modelfile import read_spec
    from fer8.models.registry import cache_dir, resolve_model
    from fer8.training.crops import prepare_crops
    from fer8.training.datasets import parse_source

    try:
        import onnx  # noqa: F401
    except ImportError:
        raise click.ClickException(
            f"quantizing needs the onnx package: {install_command('train')}"
        ) from None
    from fer8.models.quantize import quantize_model_file

    if out_path.exists() and not force:
        raise click.BadParameter(
            f"{out_path} exists; add --force to replace it", param_hint="--out"
        )
    source = resolve_model(model)
    spec = read_spec(source)
    datasets = [parse_source(s) for s in sources]
    # An equal share of faces from each dataset, each share drawn at random.
    rng = np.random.default_rng(0)
    samples = []
    for index, data in enumerate(datasets):
        found = data.read().samples
        share = faces // len(datasets) + (index < faces % len(datasets))
        chosen = rng.choice(len(found), min(share, len(found)), replace=False)
        samples += [found[i] for i in sorted(chosen)]
    progress = ProgressBar("frame calibration faces", len(samples))
    crops = prepare_crops(
        samples,
        cache if cache is not None else cache_dir() / "crops",
        image_size=spec.input_size,
        on_progress=progress,
        detector=detection["detector"],
        detector_options=detection["detector_options"],
        mask=spec.preprocessing.mask,
    )
    progress.close()
    summary = quantize_model_file(
        source,
        out_path,
        crops.rgb(),
        method=method,
        percentile=percentile,
        float_first=float_first,
        float_last=float_last,
        reduce_range=reduce_range,
        described_as=", ".join(d.name for d in datasets),
    )
    click.echo(
        f"fer8: int8 network calibrated on {summary['faces']} faces; the float "
        f"network's label on {summary['same_label']:.1%} of them; model: {out_path}",
        err=True,
    )
