"""How the package's modules depend on each other: no upward import when fer8 is
imported, a leading underscore means the name stays in its own module, and no module
grows past what a newcomer reads at once."""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

from conftest import ROOT


def test_import_fer8_leaves_training_out():
    """The reader of format-1 files is found when one is opened (fer8.models.legacy),
    not by importing fer8.training with the package."""
    code = (
        "import sys, fer8\n"
        "print(sorted(m for m in sys.modules if m.startswith(('fer8.training', 'tensorflow'))))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "[]"


def private_imports(path: Path, root: Path = ROOT) -> list[str]:
    """``from fer8... import _name`` (or a relative import of one) in ``path``: each as
    ``path:line: module._name``."""
    found = []
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if not isinstance(node, ast.ImportFrom):
            continue
        module = node.module or ""
        if node.level == 0 and not module.startswith("fer8"):
            continue
        for alias in node.names:
            if alias.name.startswith("_") and not alias.name.startswith("__"):
                where = path.relative_to(root)
                found.append(f"{where}:{node.lineno}: {'.' * node.level}{module}.{alias.name}")
    return found


def test_no_module_imports_another_modules_private_name():
    """A name other modules need is public, in the module that owns it (tests and
    scripts included): an underscore promises a reader that only its module uses it."""
    files = [
        path
        for folder in ("src", "tests", "scripts")
        for path in sorted((ROOT / folder).rglob("*.py"))
    ]
    assert len(files) > 100
    found = [hit for path in files for hit in private_imports(path)]
    assert found == []


def test_the_private_import_check_sees_multi_line_and_relative_imports(tmp_path):
    sample = tmp_path / "sample.py"
    sample.write_text(
        "from fer8.cli.common import (\n    handle_errors,\n    _writer,\n)\n"
        "from .inputs import _Split\nfrom os import _exit\nfrom fer8 import __version__\n"
    )
    assert private_imports(sample, tmp_path) == [
        "sample.py:1: fer8.cli.common._writer",
        "sample.py:5: .inputs._Split",
    ]


#: The most lines a module of src/fer8 has (issue 44): past it, a module does more than
#: one job and is split by job.
MAX_MODULE_LINES = 450


def long_modules(package: Path, limit: int = MAX_MODULE_LINES) -> list[str]:
    """Each module of ``package`` longer than ``limit`` lines, as ``path: N lines``."""
    found = []
    for path in sorted(package.rglob("*.py")):
        lines = len(path.read_text().splitlines())
        if lines > limit:
            found.append(f"{path.relative_to(package.parent)}: {lines} lines")
    return found


def test_no_module_is_over_450_lines():
    assert long_modules(ROOT / "src" / "fer8") == []


def test_the_length_check_counts_lines_of_every_module(tmp_path):
    package = tmp_path / "pkg"
    (package / "sub").mkdir(parents=True)
    (package / "short.py").write_text("x = 1\n" * 450)
    (package / "sub" / "long.py").write_text("x = 1\n" * 451)
    assert long_modules(package) == ["pkg/sub/long.py: 451 lines"]
