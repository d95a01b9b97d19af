"""Faces of several inputs through the network together, batches running in threads of
their own (``fer8.pipeline.batching``): the answers, their order and which session runs
which batch."""

from __future__ import annotations

import threading

import numpy as np
import pytest

import fer8.pipeline.batching as batching
from fer8.pipeline.batching import Prepared, classified


def _inputs(count: int, faces: int, size: int) -> list[Prepared]:
    """``count`` inputs of ``faces`` random crops each; the fifth is an unreadable input."""
    rng = np.random.default_rng(7)
    inputs = []
    for index in range(count):
        if index == 4:
            inputs.append(Prepared(f"input {index}", error="cannot be read"))
            continue
        crops = [rng.integers(0, 256, (size, size, 3), np.uint8) for _ in range(faces)]
        inputs.append(Prepared(f"input {index}", crops=crops))  # type: ignore[arg-type]
    return inputs


def _run(model, runners: int, count: int = 11, faces: int = 2, batch_size: int = 3):
    size = model.spec.input_size
    results = list(
        classified(_inputs(count, faces, size), model, batch_size=batch_size, runners=runners)
    )
    return [(r.source, r.error, r.probabilities) for r in results]


@pytest.mark.parametrize("runners", [1, 2, 3])
def test_batches_in_threads_give_the_answers_of_batches_one_by_one(tiny_model, runners):
    # 20 faces in batches of 3: inputs whose faces fall in two batches, run at once.
    expected = _run(tiny_model, runners=0)
    got = _run(tiny_model, runners=runners)
    assert [(s, e) for s, e, _ in got] == [(s, e) for s, e, _ in expected]
    assert got[4][1] == "cannot be read"
    for (_, _, a), (_, _, b) in zip(got, expected):
        np.testing.assert_array_equal(a, b)


def test_the_first_batch_runs_on_the_model_and_the_next_on_its_concurrent_form(
    tiny_model, monkeypatch
):
    concurrent = tiny_model.concurrent(2)
    assert concurrent is not None
    monkeypatch.setattr(tiny_model, "concurrent", lambda runners: concurrent)
    ran = []
    real = batching.classify

    def recording(crops, model, **kwargs):
        ran.append((len(crops), model, threading.current_thread().name))
        return real(crops, model, **kwargs)

    monkeypatch.setattr(batching, "classify", recording)
    _run(tiny_model, runners=2)
    assert [n for n, _, _ in ran] == [3] * 6 + [2]
    assert ran[0][1] is tiny_model
    assert all(model is concurrent for _, model, _ in ran[1:])
    assert all(name.startswith("fer8-network") for _, _, name in ran)


def test_one_batch_does_not_build_the_concurrent_session(tiny_model, monkeypatch):
    """A one-photo `fer8 predict` would otherwise wait for a second session."""

    def refuse(runners):
        raise AssertionError("concurrent() called for a single batch")

    monkeypatch.setattr(tiny_model, "concurrent", refuse)
    (result,) = _run(tiny_model, runners=2, count=1, faces=3)
    assert result[2].shape == (3, len(tiny_model.labels))


def test_a_model_without_a_concurrent_form_runs_one_batch_at_a_time(tiny_model, monkeypatch):
    expected = _run(tiny_model, runners=0)
    monkeypatch.setattr(tiny_model, "concurrent", lambda runners: None)
    running, most = [0], [0]
    lock = threading.Lock()
    real = batching.classify

    def counting(crops, model, **kwargs):
        with lock:
            running[0] += 1
            most[0] = max(most[0], running[0])
        try:
            return real(crops, model, **kwargs)
        finally:
            with lock:
                running[0] -= 1

    monkeypatch.setattr(batching, "classify", counting)
    got = _run(tiny_model, runners=2)
    assert most[0] == 1
    for (_, _, a), (_, _, b) in zip(got, expected):
        np.testing.assert_array_equal(a, b)


def test_an_error_in_a_batch_reaches_the_caller(tiny_model, monkeypatch):
    def broken(crops, model, **kwargs):
        raise RuntimeError("the network failed")

    monkeypatch.setattr(batching, "classify", broken)
    with pytest.raises(RuntimeError, match="the network failed"):
        _run(tiny_model, runners=2)
