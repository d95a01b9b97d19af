"""Each command's own settings, beside the shared ones of :mod:`fer8.options.pipeline`:
what to read, what to write, and the knobs of the work only that command does."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from fer8.options.settings import Options, setting
from fer8.output import FORMATS
from fer8.pipeline.images import MAX_PIXELS

#: The fixed split's sides a fer2013.csv is read by.
SPLITS = ("train", "val", "test")


@dataclass(frozen=True, kw_only=True)
class OutputOptions(Options):
    """How results are printed.

    Attributes:
        format: Output format. Default: table on a terminal, jsonl otherwise.
    """

    format: str | None = setting(None, choices=FORMATS)


@dataclass(frozen=True, kw_only=True)
class PredictOptions(Options):
    """``fer8 predict``'s own settings: its pictures, its inputs and where it runs.

    Attributes:
        annotate: Write each image with boxes, labels and confidence drawn into this folder.
        landmarks: Add each face's 68 landmarks to the table and the CSV (x_0..x_67, y_0..y_67), and
            its head pose to the table. JSON always has both.
        draw_landmarks: With --annotate (or --explain): draw each face's landmarks too.
        explain: Write each photo with a heatmap over every face of where the evidence for its
            expression lies (NAME.explain.png) into this folder.
        max_faces: Keep the N largest faces per image.
        no_detect: Take each whole image as one face (pre-cropped faces).
        progress: Progress bar on stderr (default: when stderr is a terminal and stdout is not).
        max_pixels: Refuse larger images (raise it for panoramas).
        engine: local: this process; ray: a Ray cluster (the ray extra; photos only), writing --out.
        ray_address: --engine ray: the cluster to join (auto, HOST:PORT or ray://HOST:PORT);
            default: start a local Ray instance.
        out: --engine ray: write one row per face to this .parquet or .jsonl file.
    """

    annotate: Path | None = setting(None, path="dir")
    landmarks: bool = setting(False)
    draw_landmarks: bool = setting(False)
    explain: Path | None = setting(None, path="dir")
    max_faces: int | None = setting(None, min=1)
    no_detect: bool = setting(False)
    progress: bool | None = setting(None, flag="--progress/--no-progress")
    max_pixels: int = setting(MAX_PIXELS, min=1)
    engine: str = setting("local", choices=("local", "ray"))
    ray_address: str | None = setting(None, metavar="ADDRESS")
    out: Path | None = setting(None, path="file")


@dataclass(frozen=True, kw_only=True)
class LiveOptions(Options):
    """``fer8 live``'s own settings.

    Attributes:
        camera: A camera's index, or a video file or stream URL (anything FFmpeg opens).
        window: Show the frames with boxes and labels in a window (default: when there is a
            display). Without one, rows are printed.
        max_faces: Keep the N largest faces.
    """

    camera: str = setting("0", metavar="INDEX|FILE|URL")
    window: bool | None = setting(None, flag="--window/--no-window")
    max_faces: int | None = setting(None, min=1)


@dataclass(frozen=True, kw_only=True)
class ServerOptions(Options):
    """``fer8 serve``'s own settings (:class:`fer8.serving.launch.ServeOptions` carries
    them to the server processes).

    Attributes:
        host: Address to listen on.
        max_upload_mb: Larger uploads are refused with 413.
        max_video_mb: The same for videos (a video/* body, or a file declared a video).
        max_pixels: Refuse larger images with 400 (raise it for panoramas).
        api_key_file: API keys, one a line: /v1/* then needs 'Authorization: Bearer KEY' (default:
            FER8_API_KEYS, keys separated by commas; none: no key asked).
        workers: Server processes, each with its own model, to use more cores.
        shutdown_timeout: On SIGTERM, how long the requests in flight get to finish.
        ssl_certfile: Serve HTTPS with this PEM certificate: browsers allow the page's webcam only
            on localhost or over HTTPS.
        ssl_keyfile: The certificate's private key (PEM), if not in --ssl-certfile.
    """

    host: str = setting("127.0.0.1")
    port: int = setting(8000, min=0, max=65535)
    max_upload_mb: float = setting(10.0, min=0, min_open=True)
    max_video_mb: float = setting(100.0, min=0, min_open=True)
    max_pixels: int = setting(MAX_PIXELS, min=1)
    api_key_file: Path | None = setting(None, path="existing file")
    workers: int = setting(1, min=1)
    shutdown_timeout: float = setting(10.0, min=0, metavar="SECONDS")
    ssl_certfile: Path | None = setting(None, path="existing file")
    ssl_keyfile: Path | None = setting(None, path="existing file")


@dataclass(frozen=True, kw_only=True)
class EvaluateOptions(Options):
    """``fer8 evaluate``'s own settings.

    Attributes:
        data: Labelled data: class folders, a FER+ folder (label.csv), an ExpW folder (label.lst) or
            fer2013.csv, or an archive of one (.tar.gz, .zip; ARCHIVE/FOLDER for one of several
            inside); @train or @val for one side of the fixed split (by photo, film or subject).
            Repeat for several datasets.
        out: Write evaluation.json, and a confusion-matrix picture and a reliability diagram per
            dataset, here.
        format: Default: table on a terminal, json otherwise.
        split: Which rows of a fer2013.csv to evaluate.
        progress: Progress bars on stderr (default: when stderr is a terminal).
    """

    data: tuple[str, ...] = setting(metavar="PATH[@SPLIT]")
    out: Path | None = setting(None, path="dir")
    format: str | None = setting(None, choices=("table", "json"))
    split: str = setting("test", choices=SPLITS)
    progress: bool | None = setting(None, flag="--progress/--no-progress")


@dataclass(frozen=True, kw_only=True)
class CalibrateOptions(Options):
    """``fer8 calibrate``'s own settings.

    Attributes:
        data: Labelled data to fit the temperature on, as for fer8 evaluate; data the model was not
            trained on (its validation sets). Repeat for several datasets: each weighs the same in
            the fit.
        out: The calibrated model file to write.
        force: Replace --out if it exists.
        split: Which rows of a fer2013.csv to use.
        by: temperature: one for every face. quality: also a rule that gives each face its own
            temperature from its crop's colour and detail, which fer8 then applies (an older fer8
            applies the one temperature).
    """

    data: tuple[str, ...] = setting(metavar="PATH[@SPLIT]")
    out: Path = setting(path="file")
    force: bool = setting(False)
    split: str = setting("val", choices=SPLITS)
    by: str = setting("temperature", choices=("temperature", "quality"))


@dataclass(frozen=True, kw_only=True)
class QuantizeOptions(Options):
    """``fer8 quantize``'s settings: the calibration faces, and how
    :func:`fer8.models.quantize.quantize_model_file` chooses the int8 ranges.

    Attributes:
        data: Photos or face crops to calibrate on, as for fer8 train (labels are not used): faces
            like the ones the model will see, e.g. its training data. Repeat for several datasets:
            the faces are drawn from each in turn.
        out: The model file to write: the input's content plus the int8 network.
        force: Replace --out if it exists.
        faces: Faces to calibrate on, drawn at random (seed 0) across the datasets.
        method: How each activation's range is chosen from the calibration faces.
        percentile: For --method percentile: the share of absolute values the range covers.
        float_first: Convolutions at the input left in float (6: FaceNet's stem); 0 quantizes all.
        float_last: Leave the classifier (the last layer) in float.
        reduce_range: Weights in 7 bits instead of 8: CPUs without VNNI (AVX2 only) then cannot
            saturate a product, but every CPU answers further from the float network.
        cache: Crop cache folder, shared with fer8 train (default: crops/ in the fer8 cache).
    """

    data: tuple[str, ...] = setting(metavar="PATH[@SPLIT]")
    out: Path = setting(path="file")
    force: bool = setting(False)
    faces: int = setting(1000, min=1)
    method: str = setting("percentile", choices=("minmax", "percentile", "entropy"))
    percentile: float = setting(99.999, min=90, max=100)
    float_first: int = setting(6, min=0)
    float_last: bool = setting(True, flag="--float-last/--int8-last")
    reduce_range: bool = setting(False, flag="--reduce-range/--full-range")
    cache: Path | None = setting(None, path="dir")


@dataclass(frozen=True, kw_only=True)
class ExportOptions(Options):
    """``fer8 export``'s own settings.

    Attributes:
        format: onnx: the network alone, for other runtimes; fer8: a model file in this fer8's
            format (converts files from older versions).
        out: File to write (a new one; its folder is made if missing).
        force: Replace an existing --out file.
    """

    format: str = setting("onnx", choices=("onnx", "fer8"))
    out: Path = setting(path="file")
    force: bool = setting(False)
