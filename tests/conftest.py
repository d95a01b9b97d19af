"""Shared fixtures: the public-domain example photos and a tiny random-weight model.

The model is a small CNN in the real ``.fer8`` format (``tiny_model_asset.py``), so every
pipeline and CLI test exercises the real loading and inference code in seconds; the
backbone builders have their own tests: FaceNet's in ``test_facenet.py``, the ResNet50s'
in ``test_models.py`` and ``test_training.py``.

Tests come in two tiers (``tiers.py``): ``pytest -m "not slow"`` runs those that need no
TensorFlow, Chromium or Ray and take under 10 s each.
"""

from __future__ import annotations

import os
import tempfile
from pathlib import Path

import numpy as np
import pytest
import tiers
import tiny_model_asset

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
# fer8's cache (downloads, crops, optimised ONNX graphs) in a folder of this test run,
# for the tests and the fer8 processes they start, never in the user's own.
os.environ["FER8_HOME"] = tempfile.mkdtemp(prefix="fer8-tests-")

ROOT = Path(__file__).resolve().parents[1]
EXAMPLES = ROOT / "examples"
SHARED = ROOT.parent / "shared"
LABELS = tiny_model_asset.LABELS


def pytest_configure(config: pytest.Config) -> None:
    config.pluginmanager.register(tiers, "fer8-tiers")


@pytest.fixture(scope="session")
def astronaut_path() -> Path:
    return EXAMPLES / "astronaut.png"


@pytest.fixture(scope="session")
def hopper_path() -> Path:
    return EXAMPLES / "grace_hopper.jpg"


@pytest.fixture(scope="session")
def astronaut(astronaut_path) -> np.ndarray:
    import fer8

    return fer8.load_image(astronaut_path)


@pytest.fixture(scope="session")
def hopper(hopper_path) -> np.ndarray:
    import fer8

    return fer8.load_image(hopper_path)


@pytest.fixture(scope="session")
def two_faces(astronaut, hopper) -> np.ndarray:
    """The two portraits side by side (Hopper's face is the larger one)."""
    return np.ascontiguousarray(np.concatenate([astronaut, hopper[:512]], axis=1))


@pytest.fixture(scope="session")
def tiny_model_path(tmp_path_factory) -> Path:
    """The tiny model (``tiny_model_asset.py``), a copy of the kept file: no TensorFlow needed."""
    return tiny_model_asset.copy_asset("tiny", tmp_path_factory.mktemp("models") / "tiny.fer8")


@pytest.fixture(scope="session")
def tiny_model(tiny_model_path):
    import fer8

    return fer8.load_model(tiny_model_path)


@pytest.fixture(scope="session")
def predictor(tiny_model):
    import fer8

    return fer8.Predictor(tiny_model, batch_size=4)


@pytest.fixture(scope="session")
def default_predictor():
    """The bundled model, loaded once for every test that only reads it."""
    import fer8

    return fer8.Predictor()


@pytest.fixture(scope="module", autouse=True)
def release_keras_state():
    """After each test file, drop Keras's global state and TensorFlow's kernel caches and
    collect garbage: the ResNet50s a file builds would otherwise stay in memory for the
    rest of the run (models the session's fixtures hold are kept, and keep working)."""
    yield
    import sys

    if "keras" in sys.modules:
        sys.modules["keras"].backend.clear_session()


def save(image: np.ndarray, path: Path) -> Path:
    """Write an RGB array to ``path`` (format from the extension)."""
    from PIL import Image

    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(image).save(path)
    return path
