"""``fer8 quantize``: add an int8 network, calibrated on faces, to a copy of a model file."""

from __future__ import annotations

import click

from fer8.cli.common import command, install_command
from fer8.options.commands import QuantizeOptions
from fer8.progress import ProgressBar


@command(QuantizeOptions)
def quantize(options: QuantizeOptions) -> None:
    """Add an int8 network to a copy of a model file; fer8 predict then runs it.

    Faces are framed by fer8's own pipeline, as fer8 train and fer8 predict frame
    them (detected, aligned, masked when the model masks), and ONNX Runtime measures
    each layer's activations on them. The int8 network is stored beside the float one,
    which training and explanations keep reading. Needs the train extra (the onnx
    package); running the new file does not. Prints how often the int8 network gives
    the float network's label on the calibration faces; measure accuracy with
    fer8 evaluate --model OUT.
    """
    from fer8.models.modelfile import read_spec
    from fer8.models.registry import cache_dir, resolve_model
    from fer8.training.crops import prepare_crops
    from fer8.training.datasets import draw_samples, parse_source

    try:
        import onnx  # noqa: F401
    except ImportError:
        raise click.ClickException(
            f"quantizing needs the onnx package: {install_command('train')}"
        ) from None
    from fer8.models.quantize import check_int8_layers, quantize_model_file

    try:
        check_int8_layers(options.int8_layer, options.float_first)
    except ValueError as exc:
        raise click.BadParameter(f"{exc} (--float-first)", param_hint="--int8-layer") from None
    if options.out.exists() and not options.force:
        raise click.BadParameter(
            f"{options.out} exists; add --force to replace it", param_hint="--out"
        )
    source = resolve_model(options.model.name)
    spec = read_spec(source)
    datasets = [parse_source(s) for s in options.data]
    samples = draw_samples([data.read() for data in datasets], options.faces)
    progress = ProgressBar("frame calibration faces", len(samples))
    crops = prepare_crops(
        samples,
        options.cache if options.cache is not None else cache_dir() / "crops",
        image_size=spec.input_size,
        on_progress=progress,
        **options.detection.detector_kwargs(),
        mask=spec.preprocessing.mask,
    )
    progress.close()
    summary = quantize_model_file(
        source,
        options.out,
        crops.rgb(),
        method=options.method,
        percentile=options.percentile,
        float_first=options.float_first,
        int8_layers=options.int8_layer,
        float_last=options.float_last,
        reduce_range=options.reduce_range,
        described_as=", ".join(d.name for d in datasets),
    )
    click.echo(
        f"fer8: int8 network calibrated on {summary['faces']} faces; the float "
        f"network's label on {summary['same_label']:.1%} of them; model: {options.out}",
        err=True,
    )
