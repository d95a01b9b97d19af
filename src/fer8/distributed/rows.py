"""Per-face rows as Arrow tables, and the files a distributed run writes.

The rows are :func:`fer8.output.face_rows`, the CSV writer's rows, with a fixed Arrow
schema: a batch of nothing but unreadable files would otherwise infer its face columns
as nulls, and Ray could not put it beside batches that found faces.
"""

from __future__ import annotations

import json
import os
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from fer8.output import face_rows, row_columns
from fer8.results import ImageResult

if TYPE_CHECKING:
    import pyarrow as pa

#: Output formats of ``fer8 predict --engine ray --out``, by file extension.
ROW_FORMATS = {".parquet": "parquet", ".jsonl": "jsonl"}


def row_schema(labels: Sequence[str]) -> pa.Schema:
    """The Arrow schema of :func:`fer8.output.face_rows` for a model's labels."""
    import pyarrow as pa

    types = {
        "source": pa.string(),
        "face": pa.int32(),
        "x": pa.int32(),
        "y": pa.int32(),
        "w": pa.int32(),
        "h": pa.int32(),
        "label": pa.string(),
        "confidence": pa.float64(),
        "error": pa.string(),
    }
    return pa.schema([(name, types.get(name, pa.float64())) for name in row_columns(labels)])


def rows_table(results: Sequence[ImageResult], labels: Sequence[str]) -> pa.Table:
    """The per-face rows of ``results`` as one Arrow table."""
    import pyarrow as pa

    rows = [row for result in results for row in face_rows(result, labels)]
    return pa.Table.from_pylist(rows, schema=row_schema(labels))


def row_format(path: str | os.PathLike) -> str:
    """``parquet`` or ``jsonl``, from the file's extension.

    Raises:
        ValueError: Another extension.
    """
    suffix = Path(path).suffix.lower()
    if suffix not in ROW_FORMATS:
        raise ValueError(f"{path}: write the results to a .parquet or .jsonl file")
    return ROW_FORMATS[suffix]


class RowFileWriter:
    """Writes tables of rows to one Parquet or JSON Lines file as they arrive.

    The file appears under its name only when :meth:`close` is called after every
    batch was written: a run that fails or is interrupted leaves no file that looks
    complete but lacks rows (the partial file is removed).
    """

    def __init__(self, path: str | os.PathLike, labels: Sequence[str]) -> None:
        self.path = Path(path)
        self.format = row_format(path)
        self._partial = self.path.with_name(f".{self.path.name}.partial")
        self._schema = row_schema(labels)
        self._parquet: Any = None
        self._jsonl: Any = None
        self.path.parent.mkdir(parents=True, exist_ok=True)
        if self.format == "parquet":
            import pyarrow.parquet as pq

            self._parquet = pq.ParquetWriter(self._partial, self._schema)
        else:
            self._jsonl = open(self._partial, "w", encoding="utf-8")

    def write(self, table: pa.Table) -> None:
        table = table.select(self._schema.names).cast(self._schema)
        if self._parquet is not None:
            self._parquet.write_table(table)
        else:
            for row in table.to_pylist():
                self._jsonl.write(json.dumps(row) + "\n")

    def close(self) -> None:
        """Finish the file and give it its name."""
        self._finish()
        os.replace(self._partial, self.path)

    def abort(self) -> None:
        """Remove the partial file (after a failure)."""
        self._finish()
        self._partial.unlink(missing_ok=True)

    def _finish(self) -> None:
        if self._parquet is not None:
            self._parquet.close()
        if self._jsonl is not None:
            self._jsonl.close()
