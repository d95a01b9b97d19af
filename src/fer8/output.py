"""Writing results as a table, JSON, JSON Lines or CSV.

Every writer reads ``to_dict()`` of an ``ImageResult`` (a photo) or a ``FrameResult``
(a sampled video frame: the same object with ``frame``, ``time`` and each face's
``track``), so the formats cannot disagree. Writers stream: each result is written as
it arrives (JSON, one array, is written at the end). A run with videos gives the table
and the CSV three more columns, frame, time and track, which photos leave empty; a run
of photos alone prints exactly what it printed before videos were read.
"""

from __future__ import annotations

import csv
import json
from collections.abc import Sequence
from typing import Any, TextIO

from fer8.labels import display_name, percent
from fer8.results import ImageResult

FORMATS = ("table", "json", "jsonl", "csv")
#: Head pose columns of the CSV (degrees, see fer8.pipeline.pose for the signs).
POSE_COLUMNS = ("yaw", "pitch", "roll")
#: Landmarks as CSV columns (``--landmarks``): x_0..x_67, then y_0..y_67, as py-feat.
LANDMARK_COLUMNS = tuple(f"{axis}_{i}" for axis in "xy" for i in range(68))


class Writer:
    """Base writer: ``write`` each result, then ``close`` once."""

    def __init__(
        self, stream: TextIO, labels: Sequence[str], *, video: bool = False, landmarks: bool = False
    ) -> None:
        self.stream = stream
        self.labels = tuple(labels)
        self.video = video
        self.landmarks = landmarks  # the table and the CSV show them only when asked

    def write(self, result: ImageResult) -> None:
        raise NotImplementedError

    def close(self) -> None:
        self.stream.flush()


class TableWriter(Writer):
    """Aligned columns for people: one line per face, one per faceless or failed image.

    Rows are written as results arrive, so the SOURCE column cannot be sized from them:
    pass ``source_width``, the longest source name of the run (the CLI knows its inputs
    before it starts), or long paths push the other columns out of line.
    """

    def __init__(
        self,
        stream: TextIO,
        labels: Sequence[str],
        *,
        source_width: int | None = None,
        video: bool = False,
        landmarks: bool = False,
    ) -> None:
        super().__init__(stream, labels, video=video, landmarks=landmarks)
        self.source_width = max(len("SOURCE"), source_width or 32)
        self._header_written = False

    def write(self, result: ImageResult) -> None:
        item = result.to_dict()
        if not self._header_written:
            self._line(
                ("SOURCE", "FRAME", "TIME", "TRACK"),
                "FACE",
                "BOX (x, y, w, h)",
                "EXPRESSION",
                "CONFIDENCE",
            )
            self._header_written = True
        when = (
            item["source"],
            _text(item.get("frame")),
            "-" if item.get("time") is None else f"{item['time']:.2f}",
        )
        if item["error"] is not None:
            self._line((*when, "-"), "-", "-", "error:", item["error"])
        elif not item["faces"]:
            self._line((*when, "-"), "-", "-", "no face", "")
        for index, face in enumerate(item["faces"]):
            box = ", ".join(str(v) for v in face["box"])
            self._line(
                (*when, _text(face.get("track"))),
                str(index),
                box,
                display_name(face["label"]),
                percent(face["confidence"]),
            )
            if self.landmarks:
                self.stream.write(f"    {_points_text(face)}\n")
        self.stream.flush()

    def _line(
        self, where: tuple[str, str, str, str], face: str, box: str, label: str, confidence: str
    ) -> None:
        source, frame, time, track = where
        video = f"{frame:>6} {time:>7} {track:>5} " if self.video else ""
        self.stream.write(
            f"{source:<{self.source_width}} {video}{face:>4}  {box:<20} "
            f"{label:<11} {confidence}".rstrip()
            + "\n"
        )


def _points_text(face: dict[str, Any]) -> str:
    """The table's line under a face with ``--landmarks``: its pose, then its 68 points
    in whole pixels."""
    if face.get("landmarks") is None:
        return "no landmarks (classified from the box)"
    pose = face.get("pose")
    angles = (
        ""
        if pose is None
        else f"yaw {pose['yaw']:.1f} pitch {pose['pitch']:.1f} roll {pose['roll']:.1f}; "
    )
    points = " ".join(f"{x:.0f},{y:.0f}" for x, y in face["landmarks"])
    return f"{angles}landmarks {points}"


class JsonWriter(Writer):
    """One JSON array of every image's object, written when the run ends."""

    def __init__(
        self, stream: TextIO, labels: Sequence[str], *, video: bool = False, landmarks: bool = False
    ) -> None:
        super().__init__(stream, labels, video=video, landmarks=landmarks)
        self._results: list[dict] = []

    def write(self, result: ImageResult) -> None:
        self._results.append(result.to_dict())

    def close(self) -> None:
        self.stream.write(to_json(self._results) + "\n")
        super().close()


class JsonLinesWriter(Writer):
    """One JSON object per line, flushed per image (for pipes and long runs)."""

    def write(self, result: ImageResult) -> None:
        self.stream.write(json.dumps(result.to_dict()) + "\n")
        self.stream.flush()


def row_columns(
    labels: Sequence[str], *, video: bool = False, landmarks: bool = False
) -> list[str]:
    """The columns of :func:`face_rows`, in order: CSV's header and Ray's schema."""
    return [
        "source",
        *(("frame", "time", "track") if video else ()),
        "face",
        "x",
        "y",
        "w",
        "h",
        "label",
        "confidence",
        *labels,
        *POSE_COLUMNS,
        *(LANDMARK_COLUMNS if landmarks else ()),
        "error",
    ]


def face_rows(
    result: ImageResult, labels: Sequence[str], *, video: bool = False, landmarks: bool = False
) -> list[dict[str, Any]]:
    """One flat row per face; an image or frame without faces (or unreadable) gives one
    row with ``face`` and the face's columns ``None``, so every input is in the output.

    Tables (CSV, Parquet) want one row per face rather than one nested object per image;
    the CSV writer and ``--engine ray`` share this so their rows cannot differ. With
    ``video`` the rows also have the frame, its time and the face's track (``None`` for
    photos).
    """
    item = result.to_dict()
    when = {"frame": item.get("frame"), "time": item.get("time")} if video else {}
    if not item["faces"]:
        return [
            {
                **dict.fromkeys(row_columns(labels, video=video, landmarks=landmarks)),
                "source": result.source,
                **when,
                "error": result.error,
            }
        ]
    rows = []
    for index, face in enumerate(item["faces"]):
        x, y, w, h = face["box"]
        track = {"track": face.get("track")} if video else {}
        rows.append(
            {
                "source": result.source,
                **when,
                **track,
                "face": index,
                "x": x,
                "y": y,
                "w": w,
                "h": h,
                "label": face["label"],
                "confidence": float(face["confidence"]),
                **{label: float(face["probabilities"][label]) for label in labels},
                **_pose_cells(face),
                **(_landmark_cells(face) if landmarks else {}),
                "error": None,
            }
        )
    return rows


def _pose_cells(face: dict[str, Any]) -> dict[str, float | None]:
    pose = face.get("pose") or {}
    return {name: pose.get(name) for name in POSE_COLUMNS}


def _landmark_cells(face: dict[str, Any]) -> dict[str, float | None]:
    points = face.get("landmarks")
    if points is None:
        return dict.fromkeys(LANDMARK_COLUMNS)
    xs, ys = zip(*points)
    return dict(zip(LANDMARK_COLUMNS, (*xs, *ys)))


class CsvWriter(Writer):
    """One row per face (:func:`face_rows`); images and frames without faces get one
    row with an empty face index. With ``video``, the columns frame, time (seconds) and
    track follow source."""

    def __init__(
        self, stream: TextIO, labels: Sequence[str], *, video: bool = False, landmarks: bool = False
    ) -> None:
        super().__init__(stream, labels, video=video, landmarks=landmarks)
        self._csv = csv.writer(stream, lineterminator="\n")
        self._csv.writerow(row_columns(self.labels, video=video, landmarks=landmarks))

    def write(self, result: ImageResult) -> None:
        for row in face_rows(result, self.labels, video=self.video, landmarks=self.landmarks):
            self._csv.writerow([_cell(name, value) for name, value in row.items()])
        self.stream.flush()


def _cell(name: str, value: object) -> object:
    """A CSV cell: empty for None, probabilities and confidence to 6 decimals, the
    frame's time, the pose and the landmarks as given (rounded already)."""
    if value is None:
        return ""
    if (
        isinstance(value, float)
        and name != "time"
        and name not in POSE_COLUMNS
        and name[:2] not in ("x_", "y_")
    ):
        return f"{value:.6f}"
    return value


def _text(value: object, missing: str = "-") -> str:
    return missing if value is None else str(value)


def make_writer(
    format: str,
    stream: TextIO,
    labels: Sequence[str],
    *,
    sources: Sequence[str] = (),
    video: bool = False,
    landmarks: bool = False,
) -> Writer:
    """The writer for ``format`` (one of :data:`FORMATS`); ``sources``, the names of the
    results to come, size the table's SOURCE column; ``video`` (some results will be
    video frames) adds the frame, time and track columns to the table and the CSV;
    ``landmarks`` adds each face's 68 points (and, in the table, its pose) to the table
    and the CSV (JSON always has both)."""
    writers = {"table": TableWriter, "json": JsonWriter, "jsonl": JsonLinesWriter, "csv": CsvWriter}
    if format not in writers:
        raise ValueError(f"unknown format {format!r}; choose one of {', '.join(FORMATS)}")
    if format == "table":
        return TableWriter(
            stream,
            labels,
            source_width=max(map(len, sources), default=None),
            video=video,
            landmarks=landmarks,
        )
    return writers[format](stream, labels, video=video, landmarks=landmarks)


def to_json(value: Any, *, indent: int = 2, width: int = 88) -> str:
    """``value`` as indented JSON for people to read, with each list that fits on one
    line (a box, a row of a confusion matrix) on one line: with ``json.dumps(indent=2)``
    every coordinate and count had a line of its own (250 lines for a two-dataset
    evaluation). Objects keep a line per key."""

    def render(item: Any, depth: int) -> str:
        if isinstance(item, dict) and item:
            inner = " " * (indent * (depth + 1))
            members = [
                f"{inner}{json.dumps(str(key))}: {render(member, depth + 1)}"
                for key, member in item.items()
            ]
            return "{\n" + ",\n".join(members) + "\n" + " " * (indent * depth) + "}"
        if isinstance(item, (list, tuple)) and item:
            flat = json.dumps(item)
            if indent * (depth + 1) + len(flat) <= width and not any(
                isinstance(member, dict) for member in item
            ):
                return flat
            inner = " " * (indent * (depth + 1))
            return (
                "[\n"
                + ",\n".join(inner + render(member, depth + 1) for member in item)
                + "\n"
                + " " * (indent * depth)
                + "]"
            )
        return json.dumps(item)

    return render(value, 0)
