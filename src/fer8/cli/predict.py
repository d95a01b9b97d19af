"""``fer8 predict``: photos, folders and videos in; one result per face out, with
--annotate and --explain pictures; ``--engine ray`` sends the work to a Ray cluster."""

from __future__ import annotations

import io
import itertools
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, NoReturn, cast

import click

from fer8 import drawing
from fer8.cli.common import (
    EXIT_INPUT_FAILED,
    EXIT_OK,
    EXIT_USAGE,
    command,
    exit_missing_extra,
    fail,
    logger,
    result_writer,
    same_terminal,
    verbosity,
)
from fer8.drawing import INDEX as ANNOTATION_INDEX  # noqa: F401  (fer8.cli exports it)
from fer8.options import SamplingOptions
from fer8.options.commands import PredictOptions
from fer8.progress import ProgressBar
from fer8.results import ExplainedResult, FrameResult, ImageResult

if TYPE_CHECKING:
    from fer8.drawing import VideoAnnotation
    from fer8.pipeline.predictor import Predictor


@command(PredictOptions)
@click.argument("paths", nargs=-1, required=True, type=click.Path(allow_dash=True))
def predict(paths: tuple[str, ...], options: PredictOptions) -> NoReturn:
    """Classify the expression of every face in images and videos.

    PATHS are image or video files, folders (searched recursively for images and
    videos), http(s) URLs of images, or - for one image's bytes on stdin. Videos give
    a row per face per sampled frame, with the frame, its time and the face's track
    id. With --engine ray (photos) they can also be globs and URIs that pyarrow reads
    (s3://bucket/photos/, gs://...).
    """
    from fer8.pipeline import landmark_worker
    from fer8.pipeline.landmarking import LandmarkProcess

    # A first run (no converted copy of dlib's landmark model yet): dlib's model loads
    # (0.3-0.5 s, holding the GIL) in a process of its own, on a free core, while the
    # expression model loads and the photos are read; `fer8` (fer8.console) started it
    # before its imports. Later runs map the copy in process.
    on_ray = options.engine == "ray"
    separate = landmark_worker.prestarted() or landmark_worker.wants_process()
    landmark_model = LandmarkProcess() if not on_ray and separate else None

    from fer8.pipeline.images import describe_source
    from fer8.pipeline.predictor import Predictor

    if on_ray and (options.explain is not None or options.landmarks or options.draw_landmarks):
        raise click.UsageError("--engine ray takes neither --explain nor --landmarks")
    if options.draw_landmarks and options.annotate is None and options.explain is None:
        raise click.UsageError("--draw-landmarks draws on the --annotate or --explain pictures")
    if on_ray:
        _predict_on_ray(paths, options)
    if options.out is not None or options.ray_address is not None:
        raise click.UsageError("--out and --ray-address go with --engine ray")
    inputs = list(_expand(paths))
    if not inputs:
        click.echo("fer8: error: no image or video files found in " + ", ".join(paths), err=True)
        sys.exit(EXIT_INPUT_FAILED)
    if options.no_detect and any(item.video for item in inputs):
        raise click.UsageError("--no-detect takes pre-cropped photos, not videos")
    if options.annotate is not None:
        _check_folder(inputs, options.annotate, "annotate")
    if options.explain is not None:
        _check_folder(inputs, options.explain, "explain")
    predictor = Predictor(
        options.model.name,
        landmark_model=landmark_model,
        # No warm-up run: the command's first photo is its warm-up, and the loaded model
        # has already run once (ExpressionModel checks its output); warming up would add
        # a forward pass and a second detector (this thread's) to a one-photo run.
        warmup=False,
        **options.predictor_kwargs(),
    )
    if options.explain is not None:
        from fer8.errors import ExplanationError
        from fer8.pipeline.explain import head

        try:
            head(predictor.model)  # a model without an exact map fails before any photo
        except ExplanationError as exc:
            fail(exc, EXIT_USAGE)
    writer = result_writer(
        options.format,
        predictor.labels,
        [describe_source(item.source) for item in inputs],
        video=any(item.video for item in inputs),
        landmarks=options.landmarks,
    )
    # Each failure is in the results too; on a terminal that shows both streams, a line
    # on stderr would report it twice.
    report_failures = not same_terminal()
    # By default the bar shows only when results go elsewhere than the terminal
    # (`> out.jsonl`): on a terminal the rows themselves show progress, and a bar
    # on the same screen would be drawn through them.
    show_progress = (
        options.progress
        if options.progress is not None
        else (sys.stderr.isatty() and not sys.stdout.isatty())
    )
    # A step per photo, and per sampled frame of a video: a long video moves the bar too.
    steps = _progress_steps(inputs, options.sampling) if show_progress else [1] * len(inputs)
    left = iter(steps)
    step = next(left, 0)  # the current input's steps not yet counted
    failed = 0
    annotated: dict[str, str] = {}
    explained: dict[str, str] = {}
    video: VideoAnnotation | None = None
    results = _results(
        predictor,
        inputs,
        detect=not options.no_detect,
        sampling=options.sampling,
        explain=options.explain is not None,
    )
    # One photo alone shows no bar: it is done before a bar could say anything.
    hidden = not show_progress or sum(steps) < 2
    with ProgressBar("predict", sum(steps), hidden=hidden) as bar:
        for item, found, last in results:
            result = found.result if isinstance(found, ExplainedResult) else found
            if result.error is not None:
                failed += 1
                if report_failures:
                    bar.echo(f"fer8: {result.source}: {result.error}")
            if options.annotate is not None and item.video:
                if video is None:
                    video = drawing.VideoAnnotation(
                        item.source, options.annotate / item.annotated, predictor.labels
                    )
                video.add(cast(FrameResult, result))  # a video's results are frames'
                if last:
                    if video.close():  # nothing when no frame could be read
                        names = (item.annotated, drawing.timeline_name(item.annotated))
                        annotated.update(dict.fromkeys(names, item.source))
                    video = None
            elif options.annotate is not None and result.error is None:
                path = options.annotate / item.annotated
                _save(result, path, item.source, options)
                logger.info("annotated %s -> %s", result.source, path)
                annotated[item.annotated] = result.source
            if options.explain is not None and isinstance(found, ExplainedResult) and result.ok:
                path = options.explain / item.explained
                _save(found, path, item.source, options)
                logger.info("explained %s -> %s", result.source, path)
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
    if annotated and options.annotate is not None:
        drawing.write_index(options.annotate, annotated)
    if explained and options.explain is not None:
        drawing.write_index(options.explain, explained)
    sys.exit(EXIT_INPUT_FAILED if failed else EXIT_OK)


def _predict_on_ray(paths: tuple[str, ...], options: PredictOptions) -> NoReturn:
    """``fer8 predict --engine ray``: the rows go to ``--out``; exits like plain predict."""
    if options.out is None:
        raise click.UsageError(
            "--engine ray writes its rows to a file: give --out results.parquet (or .jsonl)"
        )
    if options.format is not None or options.annotate is not None or "-" in paths:
        raise click.UsageError("--engine ray takes neither --format, --annotate nor - (stdin)")
    from fer8.distributed.job import RAY_PACKAGES, RayPrediction
    from fer8.errors import Fer8Error

    try:
        job = RayPrediction.prepare(
            paths,
            options.out,
            options.model.name,
            detect=not options.no_detect,
            **options.predictor_kwargs(),
        )
    except ModuleNotFoundError as exc:
        if exc.name not in RAY_PACKAGES:
            raise
        exit_missing_extra("--engine ray", "ray", exc.name)
    except Fer8Error as exc:  # a video among the inputs, a broken model file
        fail(exc, EXIT_USAGE)
    except ValueError as exc:  # --out's extension
        raise click.UsageError(str(exc)) from None
    show_progress = options.progress if options.progress is not None else sys.stderr.isatty()
    with ProgressBar("predict", len(job.files), hidden=not show_progress) as bar:

        def on_image(row: dict) -> None:
            if row["error"] is not None:
                bar.echo(f"fer8: {row['source']}: {row['error']}")
            bar.update(1)

        # The time left is timed from the first rows the actors send, not from their
        # start-up (seconds, which made a 17 s run read 7 minutes at 2%); -v shows
        # Ray's own notices.
        failed = job.run(
            options.ray_address,
            quiet=verbosity() == 0,
            on_image=on_image,
            on_start=bar.restart_clock,
        )
    logger.info("wrote %s (%d inputs, %d unreadable)", options.out, len(job.files), failed)
    sys.exit(EXIT_INPUT_FAILED if failed else EXIT_OK)


def _save(
    picture: ImageResult | ExplainedResult, path: Path, source: Any, options: PredictOptions
) -> None:
    """Draw a photo's result (:func:`fer8.drawing.save`) as --draw-landmarks asks, the
    photo read again from ``source`` within --max-pixels."""
    picture.save(path, source, landmarks=options.draw_landmarks, max_pixels=options.max_pixels)


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
    """Every input, with its pictures' names under --annotate and --explain
    (:class:`fer8.drawing.PictureNames`: nothing a user gave is drawn over)."""
    from fer8.pipeline.images import IMAGE_EXTENSIONS, is_url, iter_image_files
    from fer8.pipeline.video import VIDEO_EXTENSIONS, is_video

    names = drawing.PictureNames(paths)
    for arg in paths:
        if arg == "-":
            stdin = io.BytesIO(sys.stdin.buffer.read())
            stdin.name = "-"
            yield _Input(stdin, *names.of("-"))
        elif is_url(arg):  # a photo, downloaded when it is read
            yield _Input(arg, *names.of(arg))
        else:
            for path in iter_image_files([Path(arg)], IMAGE_EXTENSIONS | VIDEO_EXTENSIONS):
                video = is_video(path)
                yield _Input(str(path), *names.of(path, video=video), video=video)


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
    predictor: Predictor,
    inputs: list[_Input],
    *,
    detect: bool,
    sampling: SamplingOptions,
    explain: bool = False,
) -> Iterator[tuple[_Input, Any, bool]]:
    """(input, result, whether it is the input's last) for every photo and every sampled
    video frame, in the order of the inputs. Consecutive photos go through
    ``predict_many`` together, so their faces share batches. With ``explain`` each photo
    goes through ``Predictor.explain`` instead, and gives an ``ExplainedResult``."""
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


def _check_folder(inputs: list[_Input], folder: Path, option: str) -> None:
    """Refuse an --annotate (or --explain) folder where a picture written there would
    replace an input."""
    pictures: dict[str, Any] = {}
    for item in inputs:
        if option == "explain":
            pictures[item.explained] = item.source
            continue
        pictures[item.annotated] = item.source
        if item.video:
            pictures[drawing.timeline_name(item.annotated)] = item.source
    source = drawing.drawn_over(folder, pictures)
    if source is not None:
        click.echo(
            f"fer8: error: --{option} {folder} would draw over the input {source}; "
            "choose another folder",
            err=True,
        )
        sys.exit(EXIT_USAGE)


def _explained(predictor: Predictor, source: Any, detect: bool) -> ExplainedResult:
    """The photo's result with each face's heatmap; an unreadable photo's, without."""
    from fer8.errors import InvalidImageError
    from fer8.pipeline.images import describe_source

    name = describe_source(source)
    try:
        return ExplainedResult.of(name, predictor.explain(source, detect=detect))
    except InvalidImageError as exc:
        return ExplainedResult(ImageResult(name, (), exc.problem))
