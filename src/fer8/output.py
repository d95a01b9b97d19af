"""Writing results as a table, JSON, JSON Lines or CSV.

Every writer reads ``ImageResult.to_dict()``, so the formats cannot disagree. Writers
stream: each result is written as it arrives (JSON, one array, is written at the end).
"""

from __future__ import annotations

import csv
import json
from collections.abc import Sequence
from typing import Any, TextIO

from fer8.labels import display_name
from fer8.results import ImageResult

FORMATS = ("table", "json", "jsonl", "csv")


class Writer:
    """Base writer: ``write`` each result, then ``close`` once."""

    def __init__(self, stream: TextIO, labels: Sequence[str]) -> None:
        self.stream = stream
        self.labels = tuple(labels)

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

    def __init__(self, stream: TextIO, labels: Sequence[str], *,
                 source_width: int | None = None) -> None:
        super().__init__(stream, labels)
        self.source_width = max(len("SOURCE"), source_width or 32)
        self._header_written = False

    def write(self, result: ImageResult) -> None:
        if not self._header_written:
            self._line("SOURCE", "FACE", "BOX (x, y, w, h)", "EXPRESSION", "CONFIDENCE")
            self._header_written = True
        if result.error is not None:
            self._line(result.source, "-", "-", "error:", result.error)
        elif not result.faces:
            self._line(result.source, "-", "-", "no face", "")
        for index, face in enumerate(result.faces):
            box = ", ".join(str(v) for v in face.box.to_list())
            self._line(result.source, str(index), box, display_name(face.label),
                       f"{face.confidence:.1%}")
        self.stream.flush()

    def _line(self, source: str, face: str, box: str, label: str, confidence: str) -> None:
        self.stream.write(f"{source:<{self.source_width}} {face:>4}  {box:<20} {label:<11} "
                          f"{confidence}".rstrip() + "\n")


class JsonWriter(Writer):
    """One JSON array of every image's object, written when the run ends."""

    def __init__(self, stream: TextIO, labels: Sequence[str]) -> None:
        super().__init__(stream, labels)
        self._results: list[dict] = []

    def write(self, result: ImageResult) -> None:
        self._results.append(result.to_dict())

    def close(self) -> None:
        json.dump(self._results, self.stream, indent=2)
        self.stream.write("\n")
        super().close()


class JsonLinesWriter(Writer):
    """One JSON object per line, flushed per image (for pipes and long runs)."""

    def write(self, result: ImageResult) -> None:
        self.stream.write(json.dumps(result.to_dict()) + "\n")
        self.stream.flush()


def row_columns(labels: Sequence[str]) -> list[str]:
    """The columns of :func:`face_rows`, in order: CSV's header and Ray's schema."""
    return ["source", "face", "x", "y", "w", "h", "label", "confidence", *labels, "error"]


def face_rows(result: ImageResult, labels: Sequence[str]) -> list[dict[str, Any]]:
    """One flat row per face; an image without faces (or unreadable) gives one row with
    ``face`` and the face's columns ``None``, so every input is in the output.

    Tables (CSV, Parquet) want one row per face rather than one nested object per image;
    the CSV writer and ``--engine ray`` share this so their rows cannot differ.
    """
    if not result.faces:
        return [{**dict.fromkeys(row_columns(labels)), "source": result.source,
                 "error": result.error}]
    rows = []
    for index, face in enumerate(result.faces):
        x, y, w, h = face.box.to_list()
        rows.append({"source": result.source, "face": index, "x": x, "y": y, "w": w, "h": h,
                     "label": face.label, "confidence": float(face.confidence),
                     **{label: float(face.probabilities[label]) for label in labels},
                     "error": None})
    return rows


class CsvWriter(Writer):
    """One row per face (:func:`face_rows`); images without faces get one row with an
    empty face index."""

    def __init__(self, stream: TextIO, labels: Sequence[str]) -> None:
        super().__init__(stream, labels)
        self._csv = csv.writer(stream, lineterminator="\n")
        self._csv.writerow(row_columns(self.labels))

    def write(self, result: ImageResult) -> None:
        for row in face_rows(result, self.labels):
            self._csv.writerow(["" if value is None else f"{value:.6f}"
                                if isinstance(value, float) else value
                                for value in row.values()])
        self.stream.flush()


def make_writer(format: str, stream: TextIO, labels: Sequence[str], *,
                sources: Sequence[str] = ()) -> Writer:
    """The writer for ``format`` (one of :data:`FORMATS`); ``sources``, the names of the
    results to come, size the table's SOURCE column."""
    writers = {"table": TableWriter, "json": JsonWriter, "jsonl": JsonLinesWriter,
               "csv": CsvWriter}
    if format not in writers:
        raise ValueError(f"unknown format {format!r}; choose one of {', '.join(FORMATS)}")
    if format == "table":
        return TableWriter(stream, labels, source_width=max(map(len, sources), default=None))
    return writers[format](stream, labels)
