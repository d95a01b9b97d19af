"""``fer8 train --keep-classes``: add classes to a model (no TensorFlow needed)."""

from __future__ import annotations

import sys
from collections.abc import Sequence
from pathlib import Path

import click

from fer8.cli.common import EXIT_OK, EXIT_USAGE
from fer8.options.training import KeepClassesOptions
from fer8.progress import ProgressBar


def keep_classes(
    sources: Sequence[str],
    run_dir: Path,
    init_model: Path | None,
    val_sources: Sequence[str],
    cache: Path | None,
    workers: int,
    options: KeepClassesOptions,
) -> None:
    """Run :func:`fer8.training.new_class.add_classes` and print its report on stderr."""
    from fer8.training.new_class import add_classes

    if len(sources) != 1:
        click.echo(
            "fer8: error: --keep-classes takes one --data folder (DATA/<class>/...)", err=True
        )
        sys.exit(EXIT_USAGE)
    path, report = add_classes(
        sources[0],
        run_dir,
        init_model=init_model,
        val=val_sources,
        cache=cache,
        workers=workers,
        options=options,
        on_progress=ProgressBar,
    )
    for line in report.lines():
        click.echo(f"fer8: {line}", err=True)
    click.echo(f"fer8: model: {path}", err=True)
    sys.exit(EXIT_OK)
