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
#: The layouts --data reads, as help says them.
_DATA_LAYOUTS = (
    "class folders, a FER+ folder (label.csv), an ExpW folder "
    "(label.lst) or fer2013.csv, or an archive of one (.tar.gz, .zip; "
    "ARCHIVE/FOLDER for one of several inside)"
)
_REPLACE_OUT = "Replace --out if it exists."


@dataclass(frozen=True, kw_only=True)
class OutputOptions(Options):
    """How results are printed."""

    format: str | None = setting(
        None, "Output format. Default: table on a terminal, jsonl otherwise.", choices=FORMATS
    )


@dataclass(frozen=True, kw_only=True)
class PredictOptions(Options):
    """``fer8 predict``'s own settings: its pictures, its inputs and where it runs."""

    annotate: Path | None = setting(
        None,
        "Write each image with boxes, labels and confidence drawn into this folder.",
        path="dir",
    )
    landmarks: bool = setting(
        False,
        "Add each face's 68 landmarks to the table and the CSV (x_0..x_67, "
        "y_0..y_67), and its head pose to the table. JSON always has both.",
    )
    draw_landmarks: bool = setting(
        False, "With --annotate (or --explain): draw each face's landmarks too."
    )
    explain: Path | None = setting(
        None,
        "Write each photo with a heatmap over every face of where the evidence "
        "for its expression lies (NAME.explain.png) into this folder.",
        path="dir",
    )
    max_faces: int | None = setting(None, "Keep the N largest faces per image.", min=1)
    no_detect: bool = setting(False, "Take each whole image as one face (pre-cropped faces).")
    progress: bool | None = setting(
        None,
        "Progress bar on stderr (default: when stderr is a terminal and stdout is not).",
        flag="--progress/--no-progress",
    )
    max_pixels: int = setting(MAX_PIXELS, "Refuse larger images (raise it for panoramas).", min=1)
    engine: str = setting(
        "local",
        "local: this process; ray: a Ray cluster (the ray extra; photos only), writing --out.",
        choices=("local", "ray"),
    )
    ray_address: str | None = setting(
        None,
        "--engine ray: the cluster to join (auto, HOST:PORT or ray://HOST:PORT); "
        "default: start a local Ray instance.",
        metavar="ADDRESS",
    )
    out: Path | None = setting(
        None, "--engine ray: write one row per face to this .parquet or .jsonl file.", path="file"
    )


@dataclass(frozen=True, kw_only=True)
class LiveOptions(Options):
    """``fer8 live``'s own settings."""

    camera: str = setting(
        "0",
        "A camera's index, or a video file or stream URL (anything FFmpeg opens).",
        metavar="INDEX|FILE|URL",
    )
    window: bool | None = setting(
        None,
        "Show the frames with boxes and labels in a window (default: when there "
        "is a display). Without one, rows are printed.",
        flag="--window/--no-window",
    )
    max_faces: int | None = setting(None, "Keep the N largest faces.", min=1)


@dataclass(frozen=True, kw_only=True)
class ServerOptions(Options):
    """``fer8 serve``'s own settings (:class:`fer8.serving.launch.ServeOptions` carries
    them to the server processes)."""

    host: str = setting("127.0.0.1", "Address to listen on.")
    port: int = setting(8000, min=0, max=65535)
    max_upload_mb: float = setting(
        10.0, "Larger uploads are refused with 413.", min=0, min_open=True
    )
    max_video_mb: float = setting(
        100.0,
        "The same for videos (a video/* body, or a file declared a video).",
        min=0,
        min_open=True,
    )
    max_pixels: int = setting(
        MAX_PIXELS, "Refuse larger images with 400 (raise it for panoramas).", min=1
    )
    api_key_file: Path | None = setting(
        None,
        "API keys, one a line: /v1/* then needs 'Authorization: Bearer KEY' "
        "(default: FER8_API_KEYS, keys separated by commas; none: no key asked).",
        path="existing file",
    )
    workers: int = setting(
        1, "Server processes, each with its own model, to use more cores.", min=1
    )
    shutdown_timeout: float = setting(
        10.0, "On SIGTERM, how long the requests in flight get to finish.", min=0, metavar="SECONDS"
    )
    ssl_certfile: Path | None = setting(
        None,
        "Serve HTTPS with this PEM certificate: browsers allow the page's webcam "
        "only on localhost or over HTTPS.",
        path="existing file",
    )
    ssl_keyfile: Path | None = setting(
        None, "The certificate's private key (PEM), if not in --ssl-certfile.", path="existing file"
    )


@dataclass(frozen=True, kw_only=True)
class EvaluateOptions(Options):
    """``fer8 evaluate``'s own settings."""

    data: tuple[str, ...] = setting(
        help=f"Labelled data: {_DATA_LAYOUTS}; @train or @val for one side of the fixed "
        "split (by photo, film or subject). Repeat for several datasets.",
        metavar="PATH[@SPLIT]",
    )
    out: Path | None = setting(
        None,
        "Write evaluation.json, and a confusion-matrix picture and a "
        "reliability diagram per dataset, here.",
        path="dir",
    )
    format: str | None = setting(
        None, "Default: table on a terminal, json otherwise.", choices=("table", "json")
    )
    split: str = setting("test", "Which rows of a fer2013.csv to evaluate.", choices=SPLITS)
    progress: bool | None = setting(
        None,
        "Progress bars on stderr (default: when stderr is a terminal).",
        flag="--progress/--no-progress",
    )


@dataclass(frozen=True, kw_only=True)
class CalibrateOptions(Options):
    """``fer8 calibrate``'s own settings."""

    data: tuple[str, ...] = setting(
        help="Labelled data to fit the temperature on, as for fer8 evaluate; data the "
        "model was not trained on (its validation sets). Repeat for several "
        "datasets: each weighs the same in the fit.",
        metavar="PATH[@SPLIT]",
    )
    out: Path = setting(help="The calibrated model file to write.", path="file")
    force: bool = setting(False, _REPLACE_OUT)
    split: str = setting("val", "Which rows of a fer2013.csv to use.", choices=SPLITS)
    by: str = setting(
        "temperature",
        "temperature: one for every face. quality: also a rule that gives each face "
        "its own temperature from its crop's colour and detail, which fer8 then applies "
        "(an older fer8 applies the one temperature).",
        choices=("temperature", "quality"),
    )


@dataclass(frozen=True, kw_only=True)
class QuantizeOptions(Options):
    """``fer8 quantize``'s settings: the calibration faces, and how
    :func:`fer8.models.quantize.quantize_model_file` chooses the int8 ranges."""

    data: tuple[str, ...] = setting(
        help="Photos or face crops to calibrate on, as for fer8 train (labels are not "
        "used): faces like the ones the model will see, e.g. its training data. Repeat "
        "for several datasets: the faces are drawn from each in turn.",
        metavar="PATH[@SPLIT]",
    )
    out: Path = setting(
        help="The model file to write: the input's content plus the int8 network.", path="file"
    )
    force: bool = setting(False, _REPLACE_OUT)
    faces: int = setting(
        1000, "Faces to calibrate on, drawn at random (seed 0) across the datasets.", min=1
    )
    method: str = setting(
        "percentile",
        "How each activation's range is chosen from the calibration faces.",
        choices=("minmax", "percentile", "entropy"),
    )
    percentile: float = setting(
        99.999,
        "For --method percentile: the share of absolute values the range covers.",
        min=90,
        max=100,
    )
    float_first: int = setting(
        6, "Convolutions at the input left in float (6: FaceNet's stem); 0 quantizes all.", min=0
    )
    float_last: bool = setting(
        True, "Leave the classifier (the last layer) in float.", flag="--float-last/--int8-last"
    )
    reduce_range: bool = setting(
        False,
        "Weights in 7 bits instead of 8: CPUs without VNNI (AVX2 only) then cannot "
        "saturate a product, but every CPU answers further from the float network.",
        flag="--reduce-range/--full-range",
    )
    cache: Path | None = setting(
        None,
        "Crop cache folder, shared with fer8 train (default: crops/ in the fer8 cache).",
        path="dir",
    )


@dataclass(frozen=True, kw_only=True)
class ExportOptions(Options):
    """``fer8 export``'s own settings."""

    format: str = setting(
        "onnx",
        "onnx: the network alone, for other runtimes; fer8: a model file in "
        "this fer8's format (converts files from older versions).",
        choices=("onnx", "fer8"),
    )
    out: Path = setting(
        help="File to write (a new one; its folder is made if missing).", path="file"
    )
    force: bool = setting(False, "Replace an existing --out file.")
