"""``fer8 predict``: photos, folders and videos in; one result per face out, with
--annotate and --explain pictures; ``--engine ray`` sends the work to a Ray cluster."""

from __future__ import annotations

import io
import itertools
import logging
import os
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import click

from fer8.cli.common import (
    EXIT_INPUT_FAILED,
    EXIT_OK,
    EXIT_USAGE,
    _fail,
    _same_terminal,
    _verbosity,
    _writer,
    command,
    exit_missing_extra,
    logger,
)
from fer8.options import SamplingOptions
from fer8.options.commands import PredictOptions
from fer8.progress import ProgressBar

if TYPE_CHECKING:
    from fer8.pipeline.annotate import AnnotatedVideo

#: In an --annotate folder: which input each annotated picture came from.
ANNOTATION_INDEX = "sources.csv"


@command(PredictOptions)
@click.argument("paths", nargs=-1, required=True, type=click.Path(allow_dash=True))
def predict(paths: tuple[str, ...], options: PredictOptions) -> int:
    """Classify the expression of every face in images and videos.

    PATHS are image or video files, folders (searched recursively for images and
    videos), http(s) URLs of images, or - for one image's bytes on stdin. Videos give
    a row per face per sampled frame, with the frame, its time and the face's track
    id. With --engine ray (photos) they can also be globs and URIs that pyarrow reads
    (s3://bucket/photos/, gs://...).
    """
    from fer8.pipeline.landmarking import LandmarkProcess

    # The settings the steps below read, by the names they had as parameters.
    fmt, annotate_dir, explain_dir = options.format, options.annotate, options.explain
    show_landmarks, draw_landmarks = options.landmarks, options.draw_landmarks
    max_faces, no_detect, max_pixels = options.max_faces, options.no_detect, options.max_pixels
    progress, engine, sampling = options.progress, options.engine, options.sampling
    out_path, ray_address = options.out, options.ray_address
    # First thing: dlib's landmark model loads (0.3 s, holding the GIL) in a process of
    # its own, on a free core, while the expression model loads and the photos are read.
    landmark_model = LandmarkProcess() if engine != "ray" and LandmarkProcess.has_a_core() else None

    from fer8.pipeline.images import describe_source
    from fer8.pipeline.predictor import Predictor

    if engine == "ray" and (explain_dir is not None or show_landmarks or draw_landmarks):
        raise click.UsageError("--engine ray takes neither --explain nor --landmarks")
    if draw_landmarks and annotate_dir is None and explain_dir is None:
        raise click.UsageError("--draw-landmarks draws on the --annotate or --explain pictures")
    if engine == "ray":
        _predict_on_ray(
            paths,
            out_path,
            ray_address,
            fmt=fmt,
            annotate_dir=annotate_dir,
            progress=progress,
            model=options.model.name,
            detect=not no_detect,
            max_faces=max_faces,
            **options.classifier.to_kwargs(),
            max_pixels=max_pixels,
            **options.detection.detector_kwargs(),
        )
    if out_path is not None or ray_address is not None:
        raise click.UsageError("--out and --ray-address go with --engine ray")
    inputs = list(_expand(paths))
    if not inputs:
        click.echo("fer8: error: no image or video files found in " + ", ".join(paths), err=True)
        sys.exit(EXIT_INPUT_FAILED)
    if no_detect and any(item.video for item in inputs):
        raise click.UsageError("--no-detect takes pre-cropped photos, not videos")
    if annotate_dir is not None:
        _check_annotations(inputs, annotate_dir)
    if explain_dir is not None:
        _check_annotations(inputs, explain_dir, explain=True)
    predictor = Predictor(
        options.model.name,
        max_faces=max_faces,
        **options.classifier.to_kwargs(),
        max_pixels=max_pixels,
        landmark_model=landmark_model,
        **options.detection.detector_kwargs(),
    )
    if explain_dir is not None:
        from fer8.errors import ExplanationError
        from fer8.pipeline.explain import head

        try:
            head(predictor.model)  # a model without an exact map fails before any photo
        except ExplanationError as exc:
            _fail(exc, EXIT_USAGE)
    writer = _writer(
        fmt,
        predictor.labels,
        [describe_source(item.source) for item in inputs],
        video=any(item.video for item in inputs),
        landmarks=show_landmarks,
    )
    # Each failure is in the results too; on a terminal that shows both streams, a line
    # on stderr would report it twice.
    report_failures = not _same_terminal()
    # By default the bar shows only when results go elsewhere than the terminal
    # (`> out.jsonl`): on a terminal the rows themselves show progress, and a bar
    # on the same screen would be drawn through them.
    show_progress = (
        progress if progress is not None else (sys.stderr.isatty() and not sys.stdout.isatty())
    )
    # A step per photo, and per sampled frame of a video: a long video moves the bar too.
    steps = _progress_steps(inputs, sampling) if show_progress else [1] * len(inputs)
    left = iter(steps)
    step = next(left, 0)  # the current input's steps not yet counted
    failed = 0
    annotated: dict[str, str] = {}
    explained: dict[str, str] = {}
    video_annotation = None
    results = _results(
        predictor, inputs, detect=not no_detect, sampling=sampling, explain=explain_dir is not None
    )
    # One photo alone shows no bar: it is done before a bar could say anything.
    hidden = not show_progress or sum(steps) < 2
    with ProgressBar("predict", sum(steps), hidden=hidden) as bar:
        for item, result, last in results:
            if result.error is not None:
                failed += 1
                if report_failures:
                    bar.echo(f"fer8: {result.source}: {result.error}")
            if annotate_dir is not None and item.video:
                if video_annotation is None:
                    video_annotation = _VideoAnnotation(item, annotate_dir, predictor.labels)
                video_annotation.add(result)
                if last:
                    annotated.update(video_annotation.close())
                    video_annotation = None
            elif annotate_dir is not None and result.error is None:
                _write_annotated(
                    item.source,
                    result,
                    annotate_dir / item.annotated,
                    max_pixels,
                    landmarks=draw_landmarks,
                )
                annotated[item.annotated] = result.source
            if explain_dir is not None and not item.video and result.error is None:
                _write_explained(
                    item.source,
                    result,
                    explain_dir / item.explained,
                    max_pixels,
                    landmarks=draw_landmarks,
                )
                explained[item.explained] = result.source
            writer.write(result)
            # A video's frame count is its header's estimate: its last frame counts
            # what is left of its steps, and no frame before counts past them.
            if last:
                bar.update(step)
                step = next(left, 0)
            elif step > 1:
                bar.update(1)
                step -= 1
    writer.close()
    if annotated and annotate_dir is not None:
        _write_annotation_index(annotate_dir, annotated)
    if explained and explain_dir is not None:
        _write_annotation_index(explain_dir, explained)
    sys.exit(EXIT_INPUT_FAILED if failed else EXIT_OK)


def _predict_on_ray(
    paths: tuple[str, ...],
    out_path: Path | None,
    address: str | None,
    *,
    fmt: str | None,
    annotate_dir: Path | None,
    progress: bool | None,
    model: str | None,
    **options: Any,
) -> None:
    """``fer8 predict --engine ray``: the rows go to ``--out``; exits like plain predict."""
    if out_path is None:
        raise click.UsageError(
            "--engine ray writes its rows to a file: give --out results.parquet (or .jsonl)"
        )
    if fmt is not None or annotate_dir is not None or "-" in paths:
        raise click.UsageError("--engine ray takes neither --format, --annotate nor - (stdin)")
    from importlib.util import find_spec

    from fer8.distributed.inputs import list_inputs
    from fer8.distributed.ray_data import connect, predict_files
    from fer8.distributed.rows import row_format
    from fer8.errors import InvalidVideoError
    from fer8.models.registry import resolve_model

    try:
        row_format(out_path)
    except ValueError as exc:
        raise click.UsageError(str(exc)) from None
    # Looked up, not imported: importing Ray takes seconds, and connect() does it.
    missing = [name for name in ("ray", "pyarrow") if find_spec(name) is None]
    if missing:
        exit_missing_extra("--engine ray", "ray", missing[0])

    resolve_model(model)  # a wrong --model is a usage error before the cluster starts
    try:
        files = list_inputs(paths)
    except InvalidVideoError as exc:  # photos only, said before the cluster starts
        _fail(exc, EXIT_USAGE)
    # Ray logs each run's plan and its own notices at INFO and WARNING, and its C++ core
    # an error about Ray Data's own actor arguments; -v shows them.
    connect(
        address,
        ray_log_level=logging.ERROR if _verbosity() == 0 else logging.INFO,
        quiet_core=_verbosity() == 0,
    )
    show_progress = progress if progress is not None else sys.stderr.isatty()
    with ProgressBar("predict", len(files), hidden=not show_progress) as bar:

        def on_image(row: dict) -> None:
            if row["error"] is not None:
                bar.echo(f"fer8: {row['source']}: {row['error']}")
            bar.update(1)

        # The time left is timed from the first rows the actors send, not from their
        # start-up (seconds, which made a 17 s run read 7 minutes at 2%).
        failed = predict_files(
            files, out_path, model, on_image=on_image, on_start=bar.restart_clock, **options
        )
    logger.info("wrote %s (%d inputs, %d unreadable)", out_path, len(files), failed)
    sys.exit(EXIT_INPUT_FAILED if failed else EXIT_OK)


@dataclass(frozen=True)
class _Input:
    """One input of ``fer8 predict``: the source for the predictor, its paths under
    --annotate (a video's is its ``.mp4``) and --explain (``NAME.explain.png``), and
    whether it is a video."""

    source: Any
    annotated: str
    explained: str
    video: bool = False


def _expand(paths: tuple[str, ...]) -> Iterator[_Input]:
    """Every input, with its path under --annotate.

    Annotated pictures keep the inputs' folders, relative to the deepest folder that
    holds every input (one folder given: that folder), so ``a/IMG_1.jpg`` and
    ``b/IMG_1.jpg`` stay apart; a name that still repeats (the same file given twice)
    gets ``-2``, ``-3`` before its extension. The --explain pictures are named the same
    way from the names without their extensions, so ``a.jpg`` and ``a.png`` give
    ``a.explain.png`` and ``a-2.explain.png``. Nothing a user gave is drawn over.
    """
    from urllib.parse import unquote, urlparse

    from fer8.pipeline.images import IMAGE_EXTENSIONS, is_url, iter_image_files
    from fer8.pipeline.video import VIDEO_EXTENSIONS, is_video

    folders = [
        os.path.abspath(arg if os.path.isdir(arg) else os.path.dirname(arg) or ".")
        for arg in paths
        if arg != "-" and not is_url(arg)
    ]
    base = os.path.commonpath(folders) if folders else os.getcwd()
    taken: set[str] = set()
    explained: set[str] = set()

    def explain_name(name: str) -> str:
        return _unique(str(Path(name).with_suffix("")), explained) + ".explain.png"

    for arg in paths:
        if arg == "-":
            stdin = io.BytesIO(sys.stdin.buffer.read())
            stdin.name = "-"
            yield _Input(stdin, _unique("stdin.png", taken), explain_name("stdin.png"))
            continue
        if is_url(arg):  # a photo, downloaded when it is read
            name = os.path.basename(unquote(urlparse(arg).path)) or "download.png"
            yield _Input(arg, _unique(name, taken), explain_name(name))
            continue
        for path in iter_image_files([Path(arg)], IMAGE_EXTENSIONS | VIDEO_EXTENSIONS):
            name = os.path.relpath(os.path.abspath(path), base)
            if is_video(path):
                annotated = _unique(str(Path(name).with_suffix(".mp4")), taken)
                yield _Input(str(path), annotated, explain_name(name), video=True)
            else:
                yield _Input(str(path), _unique(name, taken), explain_name(name))


def _progress_steps(inputs: list[_Input], sampling: SamplingOptions) -> list[int]:
    """The progress bar's steps for each input: 1 for a photo, the frames a video will
    give (as its header says; 1 when it does not)."""
    from fer8.pipeline.video import sampled_count

    return [
        (sampled_count(item.source, fps=sampling.fps, every_frame=sampling.every_frame) or 1)
        if item.video
        else 1
        for item in inputs
    ]


def _results(
    predictor,
    inputs: list[_Input],
    *,
    detect: bool,
    sampling: SamplingOptions,
    explain: bool = False,
) -> Iterator[tuple[_Input, Any, bool]]:
    """(input, result, whether it is the input's last) for every photo and every sampled
    video frame, in the order of the inputs. Consecutive photos go through
    ``predict_many`` together, so their faces share batches. With ``explain`` each photo
    goes through ``Predictor.explain`` instead, and its result carries the explanations
    (``ExplainedResult``)."""
    for video, grouped in itertools.groupby(inputs, key=lambda item: item.video):
        group = list(grouped)
        if not video and explain:
            for item in group:
                yield item, _explained(predictor, item.source, detect), True
            continue
        if not video:
            photos = predictor.predict_many((item.source for item in group), detect=detect)
            for item, result in zip(group, photos):
                yield item, result, True
            continue
        for item in group:
            previous = None
            for result in predictor.predict_video(item.source, **sampling.to_kwargs()):
                if previous is not None:
                    yield item, previous, False
                previous = result
            yield item, previous, True


class _VideoAnnotation:
    """The --annotate files of one video: the video with results drawn (mp4) and the
    timeline picture (``NAME.timeline.png``)."""

    def __init__(self, item: _Input, annotate_dir: Path, labels: tuple[str, ...]) -> None:
        from fer8.pipeline.timeline import Timeline

        self.item = item
        self.video_path = annotate_dir / item.annotated
        self.timeline_name = str(Path(item.annotated).with_suffix(".timeline.png"))
        self.timeline_path = annotate_dir / self.timeline_name
        self.timeline = Timeline(labels)
        self.video: AnnotatedVideo | None = None

    def add(self, result) -> None:
        from fer8.pipeline.annotate import AnnotatedVideo

        if result.error is not None and result.frame is None:
            return  # not a video at all: nothing to draw on
        if self.video is None:
            self.video = AnnotatedVideo(self.item.source, self.video_path)
        self.video.add(result)
        self.timeline.add(result)

    def close(self) -> dict[str, str]:
        """Finish both files; returns {annotated name: source} for sources.csv."""
        if self.video is None:
            return {}
        self.video.close()
        if self.video.frames_written == 0:  # no frame could be read: nothing to show
            self.video.path.unlink(missing_ok=True)
            return {}
        self.timeline.plot(self.timeline_path, title=os.path.basename(self.item.source))
        logger.info("annotated %s -> %s, %s", self.item.source, self.video_path, self.timeline_path)
        return {self.item.annotated: self.item.source, self.timeline_name: self.item.source}


def _unique(name: str, taken: set[str]) -> str:
    """``name``, or ``name`` with ``-2``, ``-3``... before its extension if taken (compared
    case-insensitively, as some file systems do)."""
    stem, suffix = os.path.splitext(name)
    candidate, number = name, 1
    while candidate.lower() in taken:
        number += 1
        candidate = f"{stem}-{number}{suffix}"
    taken.add(candidate.lower())
    return candidate


def _check_annotations(inputs: list[_Input], annotate_dir: Path, *, explain: bool = False) -> None:
    """Refuse an --annotate (or --explain) folder where a picture written there would
    replace an input."""
    if explain:
        written = {os.path.abspath(annotate_dir / item.explained) for item in inputs}
    else:
        written = {os.path.abspath(annotate_dir / item.annotated) for item in inputs}
        written |= {
            os.path.abspath(annotate_dir / Path(item.annotated).with_suffix(".timeline.png"))
            for item in inputs
            if item.video
        }
    for item in inputs:
        if (
            isinstance(item.source, str)
            and os.path.exists(item.source)
            and os.path.abspath(item.source) in written
        ):
            click.echo(
                f"fer8: error: --{'explain' if explain else 'annotate'} {annotate_dir} "
                "would draw over the input "
                f"{item.source}; choose another folder",
                err=True,
            )
            sys.exit(EXIT_USAGE)


def _write_annotation_index(annotate_dir: Path, annotated: dict[str, str]) -> None:
    """Write (or update) ``sources.csv`` in the --annotate folder: which input each
    annotated picture came from."""
    import csv

    index = annotate_dir / ANNOTATION_INDEX
    rows: dict[str, str] = {}
    if index.is_file():
        with open(index, newline="") as handle:
            rows = {
                row["annotated"]: row["source"]
                for row in csv.DictReader(handle)
                if (annotate_dir / row.get("annotated", "")).is_file()
            }
    rows.update(annotated)
    with open(index, "w", newline="") as handle:
        writer = csv.writer(handle, lineterminator="\n")
        writer.writerow(["annotated", "source"])
        writer.writerows(sorted(rows.items()))
    logger.info(
        "wrote %d annotated pictures to %s; %s says where each came from",
        len(annotated),
        annotate_dir,
        index,
    )


def _write_annotated(
    source: Any, result, path: Path, max_pixels: int, *, landmarks: bool = False
) -> None:
    from fer8.pipeline.annotate import annotate, save_image
    from fer8.pipeline.images import load_image

    if isinstance(source, io.BytesIO):
        source.seek(0)
    save_image(
        annotate(load_image(source, max_pixels=max_pixels), result, landmarks=landmarks), path
    )
    logger.info("annotated %s -> %s", result.source, path)


@dataclass(frozen=True, eq=False)
class _ExplainedResult:
    """An image's result with its faces' explanations, for ``--explain``; writers read
    its ``result`` through the same attributes as an ``ImageResult``."""

    result: Any
    explanations: tuple = ()

    def __getattr__(self, name: str) -> Any:
        return getattr(self.result, name)


def _explained(predictor, source: Any, detect: bool) -> Any:
    from fer8.errors import InvalidImageError
    from fer8.pipeline.images import describe_source
    from fer8.results import ImageResult

    name = describe_source(source)
    try:
        explanations = predictor.explain(source, detect=detect)
    except InvalidImageError as exc:
        return ImageResult(name, (), exc.problem)
    faces = tuple(item.face for item in explanations)
    return _ExplainedResult(ImageResult(name, faces), tuple(explanations))


def _write_explained(
    source: Any, result, path: Path, max_pixels: int, *, landmarks: bool = False
) -> None:
    """The photo with each face's heatmap laid over it, then its box and label drawn."""
    from fer8.pipeline.annotate import annotate, save_image
    from fer8.pipeline.explain import overlay
    from fer8.pipeline.images import load_image

    if isinstance(source, io.BytesIO):
        source.seek(0)
    image = load_image(source, max_pixels=max_pixels)
    save_image(
        annotate(overlay(image, result.explanations), result.result, landmarks=landmarks), path
    )
    logger.info("explained %s -> %s", result.source, path)
