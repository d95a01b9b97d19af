"""The package itself: cheap to import, a clean public API."""

from __future__ import annotations

import os
import subprocess
import sys

import fer8


def test_import_loads_no_model_and_no_heavy_library():
    code = (
        "import sys, fer8; heavy = [m for m in ('tensorflow', 'keras', 'cv2', 'dlib', "
        "'ray', 'pyarrow') "
        "if m in sys.modules]; print(heavy)"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]" and out.stderr == ""


def test_the_pre_import_decisions_need_only_the_standard_library():
    """fer8's command decides on a landmark process before its imports
    (fer8.console): that module and the cache folder's rule import nothing third-party."""
    code = (
        "import sys; from fer8.pipeline import landmark_worker; import fer8.paths; "
        "print(sorted(m for m in ('numpy', 'cv2', 'onnxruntime', 'click') if m in sys.modules))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]", out.stdout


def test_help_does_not_import_tensorflow():
    code = (
        "import sys\nfrom fer8.cli import main\ntry:\n    main(['--help'])\n"
        "except SystemExit:\n    pass\nprint('tensorflow' in sys.modules, file=sys.stderr)"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert out.stderr.strip() == "False" and "predict" in out.stdout


def test_public_names_resolve():
    for name in fer8.__all__:
        assert getattr(fer8, name) is not None
    assert issubclass(fer8.InvalidImageError, (fer8.Fer8Error, ValueError))
    assert fer8.EXPRESSIONS == (
        "angry",
        "disgusted",
        "fearful",
        "happy",
        "neutral",
        "sad",
        "surprised",
        "worry",
    )


def test_first_use_prints_nothing(tiny_model_path, astronaut_path):
    """TensorFlow writes its start-up notices (absl, CUDA probing, CPU features) and a
    cuInit error straight to file descriptor 2; a library that logs through `logging`
    must not pass them on to its caller's terminal."""
    code = (
        "import fer8\n"
        f"result = fer8.Predictor({str(tiny_model_path)!r}).predict({str(astronaut_path)!r})\n"
        "assert len(result.faces) == 1\n"
    )
    env = {k: v for k, v in os.environ.items() if k != "TF_CPP_MIN_LOG_LEVEL"}
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, env=env, timeout=300
    )
    assert out.returncode == 0, out.stderr
    assert out.stdout == "" and out.stderr == ""


def test_models_never_import_training():
    """One direction: training builds on models, so models/ names no training module; a
    format-1 file's reader is registered from the training side (fer8.models.legacy)."""
    import ast
    from pathlib import Path

    models = Path(fer8.__file__).parent / "models"
    found = []
    for path in sorted(models.rglob("*.py")):
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Import):
                names = [alias.name for alias in node.names]
            elif isinstance(node, ast.ImportFrom):
                names = [node.module or ""]
            else:
                continue
            found += [f"{path.name}: {n}" for n in names if n.startswith("fer8.training")]
    assert found == []


def test_the_reader_of_format_1_files_is_registered_on_import():
    code = "import fer8.models.legacy as m; print(type(m.legacy_reader()).__name__)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "_LegacyReader"


def test_python_m_fer8_cli_runs_the_command():
    out = subprocess.run(
        [sys.executable, "-m", "fer8.cli", "--version"], capture_output=True, text=True
    )
    assert out.returncode == 0 and out.stdout.startswith("fer8, version")


def test_the_serve_extra_has_what_the_serving_scripts_import():
    """``pip install 'fer8[serve]'`` is enough to run scripts/soak_serve.py and
    bench_serve.py against a server (they also import modules of the checkout's tests/)."""
    import ast
    import re
    from importlib.metadata import packages_distributions

    import pytest
    from conftest import ROOT

    tomllib = pytest.importorskip("tomllib")  # Python 3.11+

    def name(requirement: str) -> str:
        return re.split(r"[<>=!~;\[ ]", requirement, maxsplit=1)[0].lower().replace("_", "-")

    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    installed = {
        name(r) for r in project["dependencies"] + project["optional-dependencies"]["serve"]
    }
    distributions = packages_distributions()
    local = {path.stem for folder in ("scripts", "tests") for path in (ROOT / folder).glob("*.py")}
    for script in ("soak_serve.py", "bench_serve.py"):
        tree = ast.parse((ROOT / "scripts" / script).read_text())
        imported = {
            alias.name.split(".")[0]
            for node in ast.walk(tree)
            if isinstance(node, ast.Import)
            for alias in node.names
        } | {
            node.module.split(".")[0]
            for node in ast.walk(tree)
            if isinstance(node, ast.ImportFrom) and node.level == 0 and node.module
        }
        for module in imported - set(sys.stdlib_module_names) - local - {"fer8", "__future__"}:
            packages = {name(d) for d in distributions.get(module, [module])}
            assert packages & installed, f"{script} imports {module}, not in the serve extra"
