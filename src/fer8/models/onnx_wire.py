"""Reading and extending a serialized ONNX graph without the ``onnx`` package.

Prediction depends on ONNX Runtime only; the ``onnx`` package (protobuf classes for the
format) comes with the ``train`` extra. A few small jobs on a stored graph are needed
without it: finding a node's tensors and a few weights (the classifier head, for class
activation maps), adding a graph output to a graph written before fer8 gave it that
output, replacing a few weights (a classifier that learns a new class,
:mod:`fer8.training.new_class`) and, for ``fer8 export``, building a calibrated model's
temperature into its graph and writing its metadata. They need only protobuf's wire
format, which is simple enough to read here:
each field is a key (field number and wire type) followed by its value, and a message
that appears twice in a stream is merged, its repeated fields appended. So a graph gains
a node and an output by appending a few bytes to the model, never by rewriting its
weights.

Field numbers are those of ``onnx/onnx.proto`` (IR version 8).
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from typing import Any

import numpy as np
from numpy.typing import NDArray

from fer8.errors import ModelFormatError

# onnx.proto field numbers used here.
_MODEL_GRAPH, _MODEL_METADATA = 7, 14
_GRAPH_NODE, _GRAPH_INITIALIZER, _GRAPH_INPUT, _GRAPH_OUTPUT, _GRAPH_VALUE_INFO = 1, 5, 11, 12, 13
_NODE_INPUT, _NODE_OUTPUT, _NODE_NAME, _NODE_OP_TYPE, _NODE_ATTRIBUTE = 1, 2, 3, 4, 5
_ATTRIBUTE_NAME, _ATTRIBUTE_INT, _ATTRIBUTE_TYPE = 1, 3, 20
_ATTRIBUTE_TYPE_INT = 2
_ENTRY_KEY, _ENTRY_VALUE = 1, 2
_TENSOR_DIMS, _TENSOR_DATA_TYPE, _TENSOR_FLOAT_DATA, _TENSOR_NAME, _TENSOR_RAW = 1, 2, 4, 8, 9
_VALUE_NAME, _VALUE_TYPE = 1, 2
_TYPE_TENSOR, _TENSOR_TYPE_ELEM = 1, 1
#: TensorProto.DataType values fer8's graphs store.
_DTYPES = {1: np.float32, 10: np.float16, 7: np.int64, 11: np.float64}
FLOAT = 1

_VARINT, _FIXED64, _BYTES, _FIXED32 = 0, 1, 2, 5


@dataclass(frozen=True)
class Node:
    """One graph node: its operator, the names of its tensors and its integer
    attributes (the only kind fer8 adds; :func:`read_graph_index` does not read them)."""

    op_type: str
    inputs: tuple[str, ...]
    outputs: tuple[str, ...]
    attributes: tuple[tuple[str, int], ...] = ()


@dataclass
class GraphIndex:
    """What :func:`read_graph_index` found: the nodes in order, the graph's output names,
    and where each initializer's bytes lie in the serialized model (read on demand)."""

    data: bytes
    nodes: list[Node] = field(default_factory=list)
    outputs: list[str] = field(default_factory=list)
    initializers: dict[str, tuple[int, int]] = field(default_factory=dict)

    def producer(self, tensor: str) -> Node | None:
        """The node that computes ``tensor``, if any."""
        return next((node for node in self.nodes if tensor in node.outputs), None)

    def array(self, name: str) -> NDArray:
        """An initializer as a NumPy array, in the type it is stored in.

        Raises:
            ModelFormatError: No initializer of that name, or one stored in a way fer8
                does not write (external data, an unusual type).
        """
        if name not in self.initializers:
            raise ModelFormatError(f"the graph has no weight {name!r}")
        start, end = self.initializers[name]
        dims: list[int] = []
        dtype: Any = None
        raw: bytes | None = None
        floats: NDArray | None = None
        for number, wire, value in _fields(self.data, start, end):
            if number == _TENSOR_DIMS:
                dims.extend(_packed_varints(self.data, value) if wire == _BYTES else [value])
            elif number == _TENSOR_DATA_TYPE:
                dtype = _DTYPES.get(value)
                if dtype is None:
                    raise ModelFormatError(f"weight {name!r} has ONNX data type {value}")
            elif number == _TENSOR_RAW:
                raw = self.data[value[0] : value[1]]
            elif number == _TENSOR_FLOAT_DATA and wire == _BYTES:
                floats = np.frombuffer(self.data[value[0] : value[1]], "<f4")
        if dtype is not None and raw is not None:
            array = np.frombuffer(raw, np.dtype(dtype).newbyteorder("<"))
        elif dtype is not None and floats is not None:
            array = floats
        else:
            raise ModelFormatError(f"weight {name!r} is not stored in the graph itself")
        return array.reshape(dims).astype(dtype)


def read_graph_index(data: bytes) -> GraphIndex:
    """Index a serialized ONNX model: nodes, outputs and initializer positions.

    Weights are skipped over, not copied, so indexing a 47 MB graph takes milliseconds.

    Raises:
        ModelFormatError: The bytes are not a protobuf message of the expected shape.
    """
    index = GraphIndex(data)
    try:
        for number, wire, value in _fields(data, 0, len(data)):
            if number == _MODEL_GRAPH and wire == _BYTES:
                _index_graph(index, *value)
    except (IndexError, ValueError) as exc:
        raise ModelFormatError(f"not a readable ONNX graph ({exc})") from None
    return index


def with_nodes_and_outputs(
    data: bytes,
    nodes: list[Node],
    outputs: list[str],
    initializers: Mapping[str, NDArray[np.float32]] | None = None,
) -> bytes:
    """The model with ``nodes`` appended to its graph, ``outputs`` (float tensors of
    unspecified shape) added to the graph's outputs, and ``initializers`` (float32
    arrays, by name) added to its weights."""
    graph = b""
    for node in nodes:
        body = b"".join(_string(_NODE_INPUT, name) for name in node.inputs)
        body += b"".join(_string(_NODE_OUTPUT, name) for name in node.outputs)
        body += _string(_NODE_OP_TYPE, node.op_type)
        for name, value in node.attributes:
            attribute = _string(_ATTRIBUTE_NAME, name)
            attribute += _key(_ATTRIBUTE_INT, _VARINT) + _varint(value)
            attribute += _key(_ATTRIBUTE_TYPE, _VARINT) + _varint(_ATTRIBUTE_TYPE_INT)
            body += _message(_NODE_ATTRIBUTE, attribute)
        graph += _message(_GRAPH_NODE, body)
    for name, array in (initializers or {}).items():
        array = np.asarray(array, np.float32)
        tensor = b"".join(_key(_TENSOR_DIMS, _VARINT) + _varint(dim) for dim in array.shape)
        tensor += _key(_TENSOR_DATA_TYPE, _VARINT) + _varint(FLOAT)
        tensor += _string(_TENSOR_NAME, name)
        tensor += _message(_TENSOR_RAW, array.astype("<f4").tobytes())
        graph += _message(_GRAPH_INITIALIZER, tensor)
    for name in outputs:
        tensor_type = _message(_TYPE_TENSOR, _key(_TENSOR_TYPE_ELEM, _VARINT) + _varint(FLOAT))
        graph += _message(
            _GRAPH_OUTPUT, _string(_VALUE_NAME, name) + _message(_VALUE_TYPE, tensor_type)
        )
    return data + _message(_MODEL_GRAPH, graph)


def with_initializers(data: bytes, arrays: dict[str, NDArray]) -> bytes:
    """The model with the named initializers replaced by ``arrays`` (each stored in its
    array's own type, as raw little-endian bytes), every other byte of it as it was.

    Only the graph's initializer list changes: the graph message is copied field by
    field without the old tensors, and the new ones are appended to it.

    Raises:
        ModelFormatError: An array's name is no initializer of the graph, or its type is
            not one fer8 stores.
    """
    codes = {np.dtype(dtype): code for code, dtype in _DTYPES.items()}
    missing = set(arrays) - set(read_graph_index(data).initializers)
    if missing:
        raise ModelFormatError(f"the graph has no weight {sorted(missing)[0]!r}")
    tensors = b""
    for name, array in arrays.items():
        code = codes.get(np.dtype(array.dtype))
        if code is None:
            raise ModelFormatError(f"weight {name!r}: cannot store type {array.dtype}")
        body = b"".join(_key(_TENSOR_DIMS, _VARINT) + _varint(int(d)) for d in array.shape)
        body += _key(_TENSOR_DATA_TYPE, _VARINT) + _varint(code)
        body += _string(_TENSOR_NAME, name)
        raw = np.ascontiguousarray(array, np.dtype(array.dtype).newbyteorder("<")).tobytes()
        body += _message(_TENSOR_RAW, raw)
        tensors += _message(_GRAPH_INITIALIZER, body)
    out = bytearray()
    for number, wire, value, begin, end in _spans(data, 0, len(data)):
        if number != _MODEL_GRAPH or wire != _BYTES:
            out += data[begin:end]
            continue
        graph = bytearray()
        for inner, inner_wire, inner_value, inner_begin, inner_end in _spans(data, *value):
            if inner == _GRAPH_INITIALIZER and inner_wire == _BYTES:
                tensor = next(
                    (
                        _text(data, span)
                        for field_number, field_wire, span in _fields(data, *inner_value)
                        if field_number == _TENSOR_NAME and field_wire == _BYTES
                    ),
                    None,
                )
                if tensor in arrays:
                    continue
            graph += data[inner_begin:inner_end]
        out += _message(_MODEL_GRAPH, bytes(graph) + tensors)
        tensors = b""  # a graph written in several parts gets the new tensors once
    return bytes(out)


def with_renamed_outputs(data: bytes, renamed: Mapping[str, str]) -> bytes:
    """The model with the nodes' output tensors named as ``renamed`` says (old -> new);
    the graph's outputs, and the nodes' inputs, keep their names. So a graph output
    can be computed further: rename what computes it, then append nodes that compute
    it from the renamed tensor (:func:`with_nodes_and_outputs`)."""
    return _rewritten(
        data, _MODEL_GRAPH, lambda start, end: _renamed_graph(data, start, end, renamed)
    )


def with_shapes_dropped(data: bytes, names: set[str]) -> bytes:
    """The model with the recorded shapes of the tensors ``names`` (graph inputs and
    outputs, inferred ``value_info``) dropped, their element types kept: after a layer
    gains outputs, a shape recorded for its old width (a quantized graph's ``[batch, 7]``)
    would contradict the new one, and ONNX Runtime warns at every load; a graph exported
    for one input size (YuNet's 640x640) takes any size once its input's shape is gone."""
    return _rewritten(
        data, _MODEL_GRAPH, lambda start, end: _graph_without_shapes(data, start, end, names)
    )


def metadata(data: bytes) -> dict[str, str]:
    """The model's ``metadata_props``, key -> value (a later entry wins)."""
    props: dict[str, str] = {}
    try:
        for number, wire, value in _fields(data, 0, len(data)):
            if number == _MODEL_METADATA and wire == _BYTES:
                entry = {
                    inner: _text(data, inner_value)
                    for inner, inner_wire, inner_value in _fields(data, *value)
                    if inner_wire == _BYTES
                }
                props[entry.get(_ENTRY_KEY, "")] = entry.get(_ENTRY_VALUE, "")
    except (IndexError, ValueError) as exc:
        raise ModelFormatError(f"not a readable ONNX graph ({exc})") from None
    return props


def with_metadata(data: bytes, props: Mapping[str, str]) -> bytes:
    """The model with ``props`` as its whole ``metadata_props`` (the old ones dropped)."""
    kept = _rewritten(data, _MODEL_METADATA, lambda start, end: None)
    return kept + b"".join(
        _message(_MODEL_METADATA, _string(_ENTRY_KEY, key) + _string(_ENTRY_VALUE, value))
        for key, value in props.items()
    )


def _rewritten(data: bytes, number: int, rewrite: Callable[[int, int], bytes | None]) -> bytes:
    """The model's top-level fields, those numbered ``number`` replaced by
    ``rewrite(start, end)`` of their value (dropped where it gives None), the others
    copied byte for byte."""
    parts: list[bytes] = []
    try:
        for field_number, wire, value, begin, end in _spans(data, 0, len(data)):
            if field_number == number and wire == _BYTES:
                body = rewrite(*value)
                if body is not None:
                    parts.append(_message(number, body))
            else:
                parts.append(data[begin:end])
    except (IndexError, ValueError) as exc:
        raise ModelFormatError(f"not a readable ONNX graph ({exc})") from None
    return b"".join(parts)


def _renamed_graph(data: bytes, start: int, end: int, renamed: Mapping[str, str]) -> bytes:
    parts: list[bytes] = []
    for number, wire, value, begin, stop in _spans(data, start, end):
        if number == _GRAPH_NODE and wire == _BYTES:
            body = b""
            for inner, _, inner_value, inner_begin, inner_stop in _spans(data, *value):
                name = _text(data, inner_value) if inner == _NODE_OUTPUT else None
                if name is not None and name in renamed:
                    body += _string(_NODE_OUTPUT, renamed[name])
                else:
                    body += data[inner_begin:inner_stop]
            parts.append(_message(_GRAPH_NODE, body))
        else:
            parts.append(data[begin:stop])
    return b"".join(parts)


def _graph_without_shapes(data: bytes, start: int, end: int, names: set[str]) -> bytes:
    parts: list[bytes] = []
    for number, wire, value, begin, stop in _spans(data, start, end):
        if number not in (_GRAPH_INPUT, _GRAPH_OUTPUT, _GRAPH_VALUE_INFO) or wire != _BYTES:
            parts.append(data[begin:stop])
            continue
        fields = list(_spans(data, *value))
        name = next((_text(data, v) for n, _, v, _, _ in fields if n == _VALUE_NAME), None)
        if name not in names:
            parts.append(data[begin:stop])
            continue
        body = b""
        for inner, inner_wire, inner_value, inner_begin, inner_stop in fields:
            if inner != _VALUE_TYPE or inner_wire != _BYTES:
                body += data[inner_begin:inner_stop]
                continue
            # TypeProto.tensor_type keeps its element type, not its shape.
            kept = b""
            for kind, kind_wire, kind_value, kind_begin, kind_stop in _spans(data, *inner_value):
                if kind == _TYPE_TENSOR and kind_wire == _BYTES:
                    elements = b"".join(
                        data[b:e]
                        for n, _, _, b, e in _spans(data, *kind_value)
                        if n == _TENSOR_TYPE_ELEM
                    )
                    kept += _message(_TYPE_TENSOR, elements)
                else:
                    kept += data[kind_begin:kind_stop]
            body += _message(_VALUE_TYPE, kept)
        parts.append(_message(number, body))
    return b"".join(parts)


def _index_graph(index: GraphIndex, start: int, end: int) -> None:
    data = index.data
    for number, wire, value in _fields(data, start, end):
        if wire != _BYTES:
            continue
        if number == _GRAPH_NODE:
            parts: dict[int, list[str]] = {_NODE_INPUT: [], _NODE_OUTPUT: [], _NODE_OP_TYPE: []}
            for inner, inner_wire, inner_value in _fields(data, *value):
                if inner in parts and inner_wire == _BYTES:
                    parts[inner].append(_text(data, inner_value))
            index.nodes.append(
                Node(
                    "".join(parts[_NODE_OP_TYPE]),
                    tuple(parts[_NODE_INPUT]),
                    tuple(parts[_NODE_OUTPUT]),
                )
            )
        elif number == _GRAPH_OUTPUT:
            index.outputs.extend(
                _text(data, inner_value)
                for inner, inner_wire, inner_value in _fields(data, *value)
                if inner == _VALUE_NAME and inner_wire == _BYTES
            )
        elif number == _GRAPH_INITIALIZER:
            name = next(
                (
                    _text(data, inner_value)
                    for inner, inner_wire, inner_value in _fields(data, *value)
                    if inner == _TENSOR_NAME and inner_wire == _BYTES
                ),
                None,
            )
            if name is not None:
                index.initializers[name] = value


def _fields(data: bytes, start: int, end: int) -> Iterator[tuple[int, int, Any]]:
    """(field number, wire type, value) of one message's fields; a length-delimited
    value is given as its (start, end) positions, so nothing large is copied."""
    for number, wire, value, _, _ in _spans(data, start, end):
        yield number, wire, value


def _spans(data: bytes, start: int, end: int) -> Iterator[tuple[int, int, Any, int, int]]:
    """:func:`_fields`, each with where the whole field (key and value) begins and ends."""
    position = start
    value: Any  # an int, a (start, end) span or 8/4 raw bytes, by wire type
    while position < end:
        begin = position
        key, position = _read_varint(data, position)
        number, wire = key >> 3, key & 7
        if wire == _VARINT:
            value, position = _read_varint(data, position)
        elif wire == _BYTES:
            length, position = _read_varint(data, position)
            value = (position, position + length)
            position += length
        elif wire == _FIXED64:
            value, position = data[position : position + 8], position + 8
        elif wire == _FIXED32:
            value, position = data[position : position + 4], position + 4
        else:
            raise ValueError(f"wire type {wire} at byte {position}")
        if position > end:
            raise ValueError(f"a field runs past its message at byte {position}")
        yield number, wire, value, begin, position


def _read_varint(data: bytes, position: int) -> tuple[int, int]:
    result, shift = 0, 0
    while True:
        byte = data[position]
        position += 1
        result |= (byte & 0x7F) << shift
        if byte < 0x80:
            return result, position
        shift += 7


def _packed_varints(data: bytes, span: tuple[int, int]) -> list[int]:
    values, position = [], span[0]
    while position < span[1]:
        value, position = _read_varint(data, position)
        values.append(value - (1 << 64) if value >= 1 << 63 else value)
    return values


def _text(data: bytes, span: tuple[int, int]) -> str:
    start, end = span
    return bytes(data[start:end]).decode("utf-8")


def _varint(value: int) -> bytes:
    value &= (1 << 64) - 1  # a negative int64 is its two's complement, ten bytes
    out = bytearray()
    while True:
        byte = value & 0x7F
        value >>= 7
        if value:
            out.append(byte | 0x80)
        else:
            out.append(byte)
            return bytes(out)


def _key(number: int, wire: int) -> bytes:
    return _varint(number << 3 | wire)


def _message(number: int, body: bytes) -> bytes:
    return _key(number, _BYTES) + _varint(len(body)) + body


def _string(number: int, text: str) -> bytes:
    return _message(number, text.encode("utf-8"))
