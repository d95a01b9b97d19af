"""``fer8 export``: a model as plain ONNX, or an old model file as a current one."""

from __future__ import annotations

import click

from fer8.cli.common import command, exit_missing_extra
from fer8.options.commands import ExportOptions


@command(ExportOptions)
def export(options: ExportOptions) -> None:
    """Write a model for other runtimes, or convert an older model file.

    The ONNX file takes a float32 batch (N, S, S, 3) already preprocessed and gives the
    probabilities (N, C); its metadata says how to frame a face (fer8.framing), prepare
    the input (fer8.input_size, fer8.preprocessing) and read the output (fer8.labels).
    A network whose head is global average pooling and dense layers also gives
    "features", the last feature map (N, K, h, w), which class activation maps weight. A model file
    with an int8 network (fer8 quantize) gives that network, the one fer8 predict runs.
    """
    from fer8.models.export import export_fer8, export_onnx
    from fer8.models.modelfile import read_spec
    from fer8.models.registry import resolve_model

    # Like fer8 train's run folder and --annotate's inputs: nothing is replaced unless
    # asked. A missing folder is made, as by any tool that writes a file.
    out_path = options.out
    if not options.force and out_path.exists():
        raise click.UsageError(f"--out {out_path} exists; pass --force to replace it")
    source = resolve_model(options.model.name)
    if options.format == "onnx":
        from fer8.pipeline.faces import framing

        export_onnx(source, out_path, metadata=framing(read_spec(source)))
    else:
        try:
            export_fer8(source, out_path)
        except ImportError as exc:
            exit_missing_extra("converting a model file", "train", exc.name)
    click.echo(out_path)
