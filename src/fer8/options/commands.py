"""Each command's settings: what it reads, what it writes, the knobs of the work only it
does, and the groups of :mod:`fer8.options.pipeline` it shares with other commands (with
its own defaults where it wants others). ``fer8 train``'s are in
:mod:`fer8.options.training`."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from fer8.options.pipeline import ClassifierOptions, DetectionOptions, ModelOptions, SamplingOptions
from fer8.options.settings import Options, group, setting
from fer8.output import FORMATS
from fer8.pipeline.images import MAX_PIXELS

#: Faces per forward pass where a command reads whole datasets (evaluate, calibrate):
#: nothing waits on one photo's result, so larger batches keep the network busier.
DATASET_BATCH_SIZE = 32
#: The fixed split's sides a fer2013.csv is read by.
SPLITS = ("train", "val", "test")
#: --model's help where a command makes a new model file of it.
_MODEL_TO_CALIBRATE = "Model name or .fer8 file to calibrate (default: the bundled model)."
_MODEL_TO_QUANTIZE = "Model name or .fer8 file to quantize (default: the bundled model)."
_MODEL_TO_EXPORT = "Model name, .fer8 file or run folder (default: the bundled model)."


@dataclass(frozen=True, kw_only=True)
class PredictOptions(Options):
    """``fer8 predict``'s settings.

    Attributes:
        format: Output format. Default: table on a terminal, jsonl otherwise.
        annotate: Write each image with boxes, labels and confidence drawn into this folder.
        landmarks: Add each face's 68 landmarks to the table and the CSV (x_0..x_67, y_0..y_67), and
            its head pose to the table. JSON always has both.
        draw_landmarks: With --annotate (or --explain): draw each face's landmarks too.
        explain: Write each photo with a heatmap over every face of where the evidence for its
            expression lies (NAME.explain.png) into this folder.
        model: The model.
        max_faces: Keep the N largest faces per image.
        no_detect: Take each whole image as one face (pre-cropped faces).
        classifier: How faces go through the network.
        progress: Progress bar on stderr (default: when stderr is a terminal and stdout is not).
        max_pixels: Refuse larger images (raise it for panoramas).
        sampling: Which frames of a video are analysed.
        engine: local: this process; ray: a Ray cluster (the ray extra; photos only), writing --out.
        ray_address: --engine ray: the cluster to join (auto, HOST:PORT or ray://HOST:PORT);
            default: start a local Ray instance.
        out: --engine ray: write one row per face to this .parquet or .jsonl file.
        detection: How faces are found.
    """

    format: str | None = setting(None, choices=FORMATS)
    annotate: Path | None = setting(None, path="dir")
    landmarks: bool = setting(False)
    draw_landmarks: bool = setting(False)
    explain: Path | None = setting(None, path="dir")
    model: ModelOptions = group(ModelOptions)
    max_faces: int | None = setting(None, min=1)
    no_detect: bool = setting(False)
    classifier: ClassifierOptions = group(ClassifierOptions)
    progress: bool | None = setting(None, flag="--progress/--no-progress")
    max_pixels: int = setting(MAX_PIXELS, min=1)
    sampling: SamplingOptions = group(SamplingOptions)
    engine: str = setting("local", choices=("local", "ray"))
    ray_address: str | None = setting(None, metavar="ADDRESS")
    out: Path | None = setting(None, path="file")
    detection: DetectionOptions = group(DetectionOptions)

    def predictor_kwargs(self) -> dict[str, Any]:
        """:class:`~fer8.pipeline.predictor.Predictor`'s keyword arguments but the model
        (``max_faces``, ``batch_size``, ``flip``, ``max_pixels``, the detector): what a
        local run builds its predictor from, and a Ray run its actors'."""
        return {
            "max_faces": self.max_faces,
            **self.classifier.to_kwargs(),
            "max_pixels": self.max_pixels,
            **self.detection.detector_kwargs(),
        }


@dataclass(frozen=True, kw_only=True)
class LiveOptions(Options):
    """``fer8 live``'s settings: the camera, the window, and what fer8 predict also takes.

    Attributes:
        camera: A camera's index, or a video file or stream URL (anything FFmpeg opens).
        format: Format of the printed rows. Default: table on a terminal, jsonl otherwise.
        window: Show the frames with boxes and labels in a window (default: when there is a
            display). Without one, rows are printed.
        model: The model.
        max_faces: Keep the N largest faces.
        sampling: Which frames are analysed.
        detection: How faces are found.
    """

    camera: str = setting("0", metavar="INDEX|FILE|URL")
    format: str | None = setting(None, choices=FORMATS)
    window: bool | None = setting(None, flag="--window/--no-window")
    model: ModelOptions = group(ModelOptions)
    max_faces: int | None = setting(None, min=1)
    sampling: SamplingOptions = group(SamplingOptions)
    detection: DetectionOptions = group(DetectionOptions)


@dataclass(frozen=True, kw_only=True)
class ServerOptions(Options):
    """``fer8 serve``'s settings (:class:`fer8.serving.launch.ServeOptions` carries them to
    the server processes).

    Attributes:
        host: Address to listen on.
        port: Port to listen on.
        model: The model.
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
        detection: How faces are found.
    """

    host: str = setting("127.0.0.1")
    port: int = setting(8000, min=0, max=65535)
    model: ModelOptions = group(ModelOptions)
    max_upload_mb: float = setting(10.0, min=0, min_open=True)
    max_video_mb: float = setting(100.0, min=0, min_open=True)
    max_pixels: int = setting(MAX_PIXELS, min=1)
    api_key_file: Path | None = setting(None, path="existing file")
    workers: int = setting(1, min=1)
    shutdown_timeout: float = setting(10.0, min=0, metavar="SECONDS")
    ssl_certfile: Path | None = setting(None, path="existing file")
    ssl_keyfile: Path | None = setting(None, path="existing file")
    detection: DetectionOptions = group(DetectionOptions)


@dataclass(frozen=True, kw_only=True)
class EvaluateOptions(Options):
    """``fer8 evaluate``'s settings: the labelled data, the model, how its faces are found
    and classified, and where the figures go.

    Attributes:
        data: Labelled data: class folders, a FER+ folder (label.csv), an ExpW folder (label.lst) or
            fer2013.csv, or an archive of one (.tar.gz, .zip; ARCHIVE/FOLDER for one of several
            inside); @train or @val for one side of the fixed split (by photo, film or subject).
            Repeat for several datasets.
        model: The model.
        out: Write evaluation.json, and a confusion-matrix picture and a reliability diagram per
            dataset, here.
        format: Default: table on a terminal, json otherwise.
        split: Which rows of a fer2013.csv to evaluate.
        classifier: How faces go through the network.
        progress: Progress bars on stderr (default: when stderr is a terminal).
        detection: How faces are found.
    """

    data: tuple[str, ...] = setting(metavar="PATH[@SPLIT]")
    model: ModelOptions = group(ModelOptions)
    out: Path | None = setting(None, path="dir")
    format: str | None = setting(None, choices=("table", "json"))
    split: str = setting("test", choices=SPLITS)
    classifier: ClassifierOptions = group(ClassifierOptions, batch_size=DATASET_BATCH_SIZE)
    progress: bool | None = setting(None, flag="--progress/--no-progress")
    detection: DetectionOptions = group(DetectionOptions)


@dataclass(frozen=True, kw_only=True)
class CalibrateOptions(Options):
    """``fer8 calibrate``'s settings: the data its temperature is fitted on, the model file
    it writes, and how the faces are found and classified.

    Attributes:
        model: The model to calibrate.
        data: Labelled data to fit the temperature on, as for fer8 evaluate; data the model was not
            trained on (its validation sets). Repeat for several datasets: each weighs the same in
            the fit.
        out: The calibrated model file to write.
        force: Replace --out if it exists.
        split: Which rows of a fer2013.csv to use.
        by: temperature: one for every face. quality: also a rule that gives each face its own
            temperature from its crop's colour and detail, which fer8 then applies (an older fer8
            applies the one temperature).
        classifier: How faces go through the network.
        detection: How faces are found.
    """

    model: ModelOptions = group(ModelOptions, help={"name": _MODEL_TO_CALIBRATE})
    data: tuple[str, ...] = setting(metavar="PATH[@SPLIT]")
    out: Path = setting(path="file")
    force: bool = setting(False)
    split: str = setting("val", choices=SPLITS)
    by: str = setting("temperature", choices=("temperature", "quality"))
    classifier: ClassifierOptions = group(ClassifierOptions, batch_size=DATASET_BATCH_SIZE)
    detection: DetectionOptions = group(DetectionOptions)


@dataclass(frozen=True, kw_only=True)
class QuantizeOptions(Options):
    """``fer8 quantize``'s settings: the calibration faces, and how
    :func:`fer8.models.quantize.quantize_model_file` chooses the int8 ranges.

    Attributes:
        model: The model to quantize.
        data: Photos or face crops to calibrate on, as for fer8 train (labels are not used): faces
            like the ones the model will see, e.g. its training data. Repeat for several datasets:
            the faces are drawn from each in turn.
        out: The model file to write: the input's content plus the int8 network.
        force: Replace --out if it exists.
        faces: Faces to calibrate on, drawn at random (seed 0) across the datasets.
        method: How each activation's range is chosen from the calibration faces.
        percentile: For --method percentile: the share of absolute values the range covers.
        float_first: Convolutions at the input left in float (6: FaceNet's stem); 0 quantizes all.
        int8_layer: One of those --float-first convolutions to quantize all the same (1: the
            first; repeat for several): the costliest float ones need not be the sensitive ones.
        float_last: Leave the classifier (the last layer) in float.
        reduce_range: Weights in 7 bits instead of 8: CPUs without VNNI (AVX2 only) then cannot
            saturate a product, but every CPU answers further from the float network.
        cache: Crop cache folder, shared with fer8 train (default: crops/ in the fer8 cache).
        detection: How the calibration faces are found.
    """

    model: ModelOptions = group(ModelOptions, help={"name": _MODEL_TO_QUANTIZE})
    data: tuple[str, ...] = setting(metavar="PATH[@SPLIT]")
    out: Path = setting(path="file")
    force: bool = setting(False)
    faces: int = setting(1000, min=1)
    method: str = setting("percentile", choices=("minmax", "percentile", "entropy"))
    percentile: float = setting(99.999, min=90, max=100)
    float_first: int = setting(6, min=0)
    int8_layer: tuple[int, ...] = setting((), metavar="N")
    float_last: bool = setting(True, flag="--float-last/--int8-last")
    reduce_range: bool = setting(False, flag="--reduce-range/--full-range")
    cache: Path | None = setting(None, path="dir")
    detection: DetectionOptions = group(DetectionOptions)


@dataclass(frozen=True, kw_only=True)
class ExportOptions(Options):
    """``fer8 export``'s settings.

    Attributes:
        model: The model to export.
        format: onnx: the network alone, for other runtimes; fer8: a model file in this fer8's
            format (converts files from older versions).
        out: File to write (a new one; its folder is made if missing).
        force: Replace an existing --out file.
    """

    model: ModelOptions = group(ModelOptions, help={"name": _MODEL_TO_EXPORT})
    format: str = setting("onnx", choices=("onnx", "fer8"))
    out: Path = setting(path="file")
    force: bool = setting(False)
