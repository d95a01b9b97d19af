"""Reading and extending a serialized ONNX graph without the ``onnx`` package.

Prediction depends on ONNX Runtime only; the ``onnx`` package (protobuf classes for the
format) comes with the ``train`` extra. Three small jobs on a stored graph are needed
without it: finding a node's tensors and a few weights (the classifier head, for
class activation maps), adding a graph output to a graph written before fer8 gave it
that output, and replacing a few weights (a classifier that learns a new class,
:mod:`fer8.training.new_class`). All need only protobuf's wire format, which is simple enough to read here:
each field is a key (field number and wire type) followed by its value, and a message
that appears twice in a stream is merged, its repeated fields appended. So a graph gains
a node and an output by appending a few bytes to the model, never by rewriting its
weights.

Field numbers are those of ``onnx/onnx.proto`` (IR version 8).
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

import numpy as np
from numpy.typing import NDArray

from fer8.errors import ModelFormatError

# onnx.proto field numbers used here.
_MODEL_GRAPH = 7
_GRAPH_NODE, _GRAPH_INITIALIZER, _GRAPH_OUTPUT = 1, 5, 12
_NODE_INPUT, _NODE_OUTPUT, _NODE_NAME, _NODE_OP_TYPE = 1, 2, 3, 4
_TENSOR_DIMS, _TENSOR_DATA_TYPE, _TENSOR_FLOAT_DATA, _TENSOR_NAME, _TENSOR_RAW = 1, 2, 4, 8, 9
_VALUE_NAME, _VALUE_TYPE = 1, 2
_TYPE_TENSOR, _TENSOR_TYPE_ELEM = 1, 1
#: TensorProto.DataType values fer8's graphs store.
_DTYPES = {1: np.float32, 10: np.float16, 7: np.int64, 11: np.float64}
FLOAT = 1

_VARINT, _FIXED64, _BYTES, _FIXED32 = 0, 1, 2, 5


@dataclass(frozen=True)
class Node:
    """One graph node: its operator and the names of its tensors."""

    op_type: str
    inputs: tuple[str, ...]
    outputs: tuple[str, ...]


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


def with_nodes_and_outputs(data: bytes, nodes: list[Node], outputs: list[str]) -> bytes:
    """The model with ``nodes`` appended to its graph and ``outputs`` (float tensors of
    unspecified shape) added to the graph's outputs. The nodes take no attributes."""
    graph = b""
    for node in nodes:
        body = b"".join(_string(_NODE_INPUT, name) for name in node.inputs)
        body += b"".join(_string(_NODE_OUTPUT, name) for name in node.outputs)
        body += _string(_NODE_OP_TYPE, node.op_type)
        graph += _message(_GRAPH_NODE, body)
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
    for number, wire, value, begin, end in _field_spans(data, 0, len(data)):
        if number != _MODEL_GRAPH or wire != _BYTES:
            out += data[begin:end]
            continue
        graph = bytearray()
        for inner, inner_wire, inner_value, inner_begin, inner_end in _field_spans(data, *value):
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
    for number, wire, value, _, _ in _field_spans(data, start, end):
        yield number, wire, value


def _field_spans(data: bytes, start: int, end: int) -> Iterator[tuple[int, int, Any, int, int]]:
    """:func:`_fields`, with where each field begins and ends (key included)."""
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
