"""Writing fer8 model files (the format is :mod:`fer8.models.modelfile`): a new file
from its spec, Keras config and graph, or a copy of one with its spec replaced or a
member added (an int8 network, a feature bank). Every write replaces the file
atomically and makes the same bytes from the same content (fixed member dates).
"""

from __future__ import annotations

import contextlib
import json
import os
import zipfile
from collections.abc import Iterator, Sequence
from pathlib import Path

from fer8.models.modelfile import (
    BANK_MEMBER,
    INT8_MEMBER,
    NETWORK_MEMBER,
    ONNX_MEMBER,
    SPEC_MEMBER,
    ModelSpec,
    read_spec,
)


def onnx_metadata(spec: ModelSpec) -> dict[str, str]:
    """What a standalone ONNX file needs to be used right, as ``metadata_props``:
    the labels in output order, the input size and the preprocessing (the graph's input
    is the preprocessed NHWC batch), and the whole spec. A model with a temperature
    rule says that the graph does not apply it (the exported graph applies the one
    ``fer8.temperature`` to every face), and how to."""
    rule = spec.temperature_rule
    return {
        "fer8.labels": json.dumps(list(spec.labels)),
        "fer8.input_size": str(spec.input_size),
        "fer8.input_layout": "NHWC float32, preprocessed as fer8.preprocessing says",
        "fer8.preprocessing": json.dumps(spec.preprocessing.to_dict()),
        "fer8.spec": json.dumps(spec.to_dict()),
        **(
            {
                "fer8.temperature_rule": json.dumps(rule.to_dict()),
                "fer8.temperature_rule_applied": "no: the graph applies fer8.temperature "
                "to every face; fer8 applies fer8.temperature_rule instead, per face: "
                "T = 1 / (intercept + sum(weights * measures)) of the preprocessed crop "
                "(fer8.models.temperature_rule.crop_measures), clipped to 0.05-20, and "
                "softmax(log(p) * fer8.temperature / T) of the graph's probabilities p",
            }
            if rule is not None
            else {}
        ),
    }


def write_model_file(
    path: str | os.PathLike,
    spec: ModelSpec,
    network_json: str,
    graph: bytes,
    *,
    bank: bytes | None = None,
    int8: bytes | None = None,
) -> Path:
    """Write a ``.fer8`` file from its parts (to a temporary name first, so an
    interrupted save never leaves a truncated model behind). The same parts always make
    the same bytes (the members carry a fixed date), so repacking a run reproduces its
    SHA-256. ``bank``: the ``feature_bank.npz`` member, if any; ``int8``: the int8
    network, if any (last, as :func:`with_int8_network` adds it)."""
    with replaced_atomically(path) as partial, zipfile.ZipFile(partial, "w") as archive:
        _write_member(archive, SPEC_MEMBER, _spec_bytes(spec))
        _write_member(archive, NETWORK_MEMBER, network_json.encode())
        # Stored, not deflated: ONNX Runtime then reads it at disk speed, and float
        # weights hardly compress.
        _write_member(archive, ONNX_MEMBER, graph, stored=True)
        if bank is not None:  # already compressed (npz)
            _write_member(archive, BANK_MEMBER, bank, stored=True)
        if int8 is not None:  # deflated, as with_int8_network writes it
            _write_member(archive, INT8_MEMBER, int8)
    return Path(path)


def with_member(path: str | os.PathLike, name: str, data: bytes, out: str | os.PathLike) -> Path:
    """Write a copy of the model file ``path`` to ``out`` with ``data`` as its member
    ``name`` (added, or replacing one of that name); every other member is copied byte
    for byte. ``out`` may be ``path`` itself: it is replaced atomically.

    Raises:
        ModelFormatError: ``path`` is not a model file.
    """
    return _copy_with(path, out, last=[(name, data, True)])


def rewrite_spec(path: str | os.PathLike, spec: ModelSpec, out: str | os.PathLike) -> Path:
    """Write a copy of the model file ``path`` to ``out`` with ``spec`` as its
    ``fer8.json``; every other member (the network, in whatever format version) is
    copied byte for byte. ``out`` may be ``path`` itself: it is replaced atomically.

    Raises:
        ModelFormatError: ``path`` is not a model file.
    """
    return _copy_with(path, out, first=[(SPEC_MEMBER, _spec_bytes(spec), False)])


def with_int8_network(
    path: str | os.PathLike, spec: ModelSpec, graph: bytes, out: str | os.PathLike
) -> Path:
    """Write a copy of the model file ``path`` to ``out`` with ``graph`` as its int8
    network (replacing one it had) and ``spec`` as its ``fer8.json``; the float network
    and every other member are copied byte for byte. ``out`` may be ``path`` itself.

    Raises:
        ModelFormatError: ``path`` is not a model file.
    """
    # Deflated: int8 weights, unlike float ones, compress by about a fifth.
    return _copy_with(
        path,
        out,
        first=[(SPEC_MEMBER, _spec_bytes(spec), False)],
        last=[(INT8_MEMBER, graph, False)],
    )


def _spec_bytes(spec: ModelSpec) -> bytes:
    return json.dumps(spec.to_dict(), indent=2).encode()


def _copy_with(
    path: str | os.PathLike,
    out: str | os.PathLike,
    *,
    first: Sequence[tuple[str, bytes, bool]] = (),
    last: Sequence[tuple[str, bytes, bool]] = (),
) -> Path:
    """A copy of the model file ``path`` at ``out`` (replaced atomically, so it may be
    ``path``) with the members ``first`` before and ``last`` after the others, each a
    (name, data, stored) triple; every other member is copied byte for byte, in order.

    Raises:
        ModelFormatError: ``path`` is not a model file.
    """
    path = Path(path)
    read_spec(path)  # a clear error for anything that is not a model file
    replaced = {name for name, _, _ in (*first, *last)}
    with (
        zipfile.ZipFile(path) as source,
        replaced_atomically(out) as partial,
        zipfile.ZipFile(partial, "w") as archive,
    ):
        for name, data, stored in first:
            _write_member(archive, name, data, stored=stored)
        for info in source.infolist():
            if info.filename not in replaced:
                _write_member(
                    archive,
                    info.filename,
                    source.read(info),
                    stored=info.compress_type == zipfile.ZIP_STORED,
                )
        for name, data, stored in last:
            _write_member(archive, name, data, stored=stored)
    return Path(out)


@contextlib.contextmanager
def replaced_atomically(path: str | os.PathLike) -> Iterator[Path]:
    """Yields a temporary name beside ``path`` to write to; it takes ``path``'s name
    only when the block ends without an error, so a reader never sees half a file."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    partial = path.with_name(path.name + ".partial")
    try:
        yield partial
        os.replace(partial, path)
    finally:
        partial.unlink(missing_ok=True)


def _write_member(
    archive: zipfile.ZipFile, name: str, data: bytes, *, stored: bool = False
) -> None:
    """Add ``data`` as ``name`` with a fixed date (zip's earliest), so that the same
    content always makes the same archive bytes."""
    info = zipfile.ZipInfo(name, date_time=(1980, 1, 1, 0, 0, 0))
    info.compress_type = zipfile.ZIP_STORED if stored else zipfile.ZIP_DEFLATED
    info.external_attr = 0o644 << 16  # rw-r--r--, instead of writestr's default of none
    archive.writestr(info, data)
