"""The suite's two tiers (``tiers.py``): the fast one imports no TensorFlow, Keras, Ray or
Selenium, and its tiny model is the one Keras builds."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
import tiers
import tiny_model_asset

TESTS = Path(__file__).resolve().parent


def test_fast_tier_imports_no_heavy_module(request):
    """Runs last (``tiers.py``). Fails when a test not marked slow imported TensorFlow,
    Keras, Ray or Selenium, or when a run without slow tests has one of them loaded
    (``pytest -m "not slow"`` must run without them)."""
    problems = tiers.problems(request.config)
    assert not problems, "mark these tests slow:\n" + "\n".join(problems)


@pytest.mark.slow
@pytest.mark.parametrize("name", tiny_model_asset.BUILDERS)
def test_kept_tiny_models_are_what_keras_builds(name, tmp_path):
    built = tiny_model_asset.build(name, tmp_path / "built.fer8")
    kept = tiny_model_asset.copy_asset(name, tmp_path / "kept.fer8")
    assert built.read_bytes() == kept.read_bytes(), (
        f"tests/assets/{name}.fer8 is not what tests/tiny_model_asset.py builds today: "
        "run `python tests/tiny_model_asset.py` to write it again"
    )


@pytest.mark.parametrize(
    ("markexpr", "deselects"),
    [
        ("not slow", True),
        ("not slow and shared", True),
        ("shared and not slow", True),
        ("not (slow or shared)", True),
        ("", False),
        ("shared", False),
        ("slow", False),
        ("not slow or shared", False),
        ("not shared", False),
    ],
)
def test_deselects_slow_only_when_no_slow_test_can_be_selected(markexpr, deselects):
    assert tiers.deselects_slow(markexpr) is deselects


def test_marks_module_slow_reads_pytestmark_from_the_source(tmp_path):
    cases = {
        "pytestmark = pytest.mark.slow\n": True,
        "pytestmark = [pytest.mark.shared, pytest.mark.slow]\n": True,
        "pytestmark = pytest.mark.shared\n": False,
        "@pytest.mark.slow\ndef test_one():\n    pass\n": False,
        "pytestmark = (\n": False,  # not Python: pytest reports it when collecting
    }
    for number, (source, slow) in enumerate(cases.items()):
        path = tmp_path / f"test_{number}.py"
        path.write_text("import pytest\n" + source)
        assert tiers.marks_module_slow(path) is slow, source


@pytest.fixture
def suite(tmp_path) -> Path:
    """A small suite with the tiers plugin: a fast file, a slow file that imports a
    stand-in ``ray`` at its top, and a stand-in ``tensorflow`` that the fast test (or the
    conftest) imports when FER8_TIERS_IMPORT says ``test`` (or ``conftest``)."""
    (tmp_path / "tensorflow.py").write_text('"""A stand-in."""\n')
    (tmp_path / "ray.py").write_text('"""A stand-in."""\n')
    (tmp_path / "conftest.py").write_text(
        textwrap.dedent(
            """
            import os

            import tiers

            if os.environ.get("FER8_TIERS_IMPORT") == "conftest":
                import tensorflow  # noqa: F401

            def pytest_configure(config):
                config.addinivalue_line("markers", "slow: slow")
                config.pluginmanager.register(tiers, "fer8-tiers")
            """
        )
    )
    (tmp_path / "test_fast.py").write_text(
        textwrap.dedent(
            """
            import os

            from test_tiers import test_fast_tier_imports_no_heavy_module  # noqa: F401

            def test_predicts():
                if os.environ.get("FER8_TIERS_IMPORT") == "test":
                    import tensorflow  # noqa: F401
            """
        )
    )
    (tmp_path / "test_slow.py").write_text(
        textwrap.dedent(
            """
            import pytest
            import ray  # noqa: F401

            pytestmark = pytest.mark.slow

            def test_trains():
                pass
            """
        )
    )
    return tmp_path


def run_suite(suite: Path, *args: str, imports: str = "") -> subprocess.CompletedProcess:
    # Without the plugins installed beside pytest (Hypothesis, Schemathesis): a second
    # faster, and not needed here.
    env = {
        **os.environ,
        "PYTHONPATH": os.pathsep.join([str(TESTS), str(suite)]),
        "PYTEST_DISABLE_PLUGIN_AUTOLOAD": "1",
    }
    env["FER8_TIERS_IMPORT"] = imports
    return subprocess.run(
        [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "-rN", *args],
        cwd=suite,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )


def test_check_fails_when_a_fast_test_imports_tensorflow(suite):
    result = run_suite(suite, "-m", "not slow", imports="test")
    assert result.returncode == 1, result.stdout + result.stderr
    assert "1 failed, 1 passed in" in result.stdout and "deselected" not in result.stdout
    assert "tensorflow was imported by test_fast.py::test_predicts" in result.stdout
    assert "ray" not in result.stdout.split("mark these tests slow")[1]


def test_check_fails_when_tensorflow_is_loaded_before_any_test(suite):
    result = run_suite(suite, "-m", "not slow", imports="conftest")
    assert result.returncode == 1, result.stdout + result.stderr
    assert "tensorflow is imported in a run without slow tests" in result.stdout


def test_fast_tier_does_not_import_slow_test_files(suite):
    result = run_suite(suite, "-m", "not slow")
    assert result.returncode == 0, result.stdout + result.stderr
    assert "2 passed" in result.stdout and "deselected" not in result.stdout


def test_whole_suite_imports_slow_test_files(suite):
    result = run_suite(suite)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "3 passed" in result.stdout
