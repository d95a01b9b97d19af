"""The suite's two tiers: the fast one's tiny model is the one Keras builds."""

from __future__ import annotations

import pytest
import tiny_model_asset


@pytest.mark.slow
def test_kept_tiny_model_is_what_keras_builds(tiny_model_path, tmp_path):
    built = tiny_model_asset.build(tmp_path / "tiny.fer8")
    assert built.read_bytes() == tiny_model_path.read_bytes(), (
        "tests/assets/tiny.fer8 is not what tests/tiny_model_asset.py builds today: "
        "run `python tests/tiny_model_asset.py` to write it again"
    )
