"""The README's examples, and those of the pages in docs/, work as written on a fresh install.

Every ```python block of README.md and of docs/*.md runs in a fresh interpreter, from a folder that has
the repository's ``examples/`` (as a reader's clone does), and must exit 0 with nothing
on stderr (the library prints nothing). A block that needs data the reader supplies is
marked on the line before it::

    <!-- readme-test: data=raf,jaffe; with image_size=32 epochs=1 -->

and runs in a folder where the ``data`` names are tiny generated datasets of class
folders (two small face crops per class), with the keyword arguments after ``with``
set to those values wherever the block passes them (a small, short run: the test is
about the code running as written, not about accuracy). The terminal transcripts under
"Quick start" (``$ fer8 ...`` lines and the table they print) are rerun and compared.
"""

from __future__ import annotations

import os
import re
import shlex
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from conftest import ROOT, save

README = (ROOT / "README.md").read_text()
#: The documents whose Python blocks are run: the README, then docs/ page by page.
DOCUMENTS = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]
MARKER = re.compile(r"<!-- readme-test: (.*?) -->")


def _fenced_blocks(text: str) -> list[tuple[str, str, str]]:
    """(info string, body, the non-blank line before the block) of each fenced block."""
    blocks, lines, before = [], text.splitlines(), ""
    i = 0
    while i < len(lines):
        line = lines[i].strip()
        if line.startswith("```"):
            info, body = line[3:].strip(), []
            i += 1
            while i < len(lines) and lines[i].strip() != "```":
                body.append(lines[i])
                i += 1
            blocks.append((info, "\n".join(body) + "\n", before))
        elif line:
            before = line
        i += 1
    return blocks


def _parse(spec: str | None, document: str = "README.md") -> tuple[list[str], dict[str, str]]:
    """``data=a,b; with k=v k2=v2`` -> (["a", "b"], {"k": "v", "k2": "v2"})."""
    data, settings = [], {}
    for field in filter(None, (f.strip() for f in (spec or "").split(";"))):
        if field.startswith("data="):
            data = field[len("data=") :].split(",")
        elif field.startswith("with "):
            settings = dict(pair.split("=", 1) for pair in field[len("with ") :].split())
        else:
            raise ValueError(f"{document}: unknown readme-test field {field!r}")
    return data, settings


_FOUND = [
    (path.relative_to(ROOT).as_posix(), body, before)
    for path in DOCUMENTS
    for info, body, before in _fenced_blocks(path.read_text())
    if info == "python"
]
BLOCKS = [
    (body, *_parse(MARKER.fullmatch(before)[1] if MARKER.fullmatch(before) else None, document))
    for document, body, before in _FOUND
]
#: The classes of the generated datasets: the bundled model's, which training starts from.
CLASSES = ("anger", "disgust", "fear", "happiness", "neutral", "sadness", "surprise")


def test_the_readme_has_python_examples():
    assert len(BLOCKS) >= 2 and any(data for _, data, _ in BLOCKS)


def test_the_docs_pages_python_examples_run_too():
    """The examples moved from the README to docs/ stay under test."""
    documents = {document for document, _, _ in _FOUND}
    assert {"README.md", "docs/python-api.md", "docs/videos.md", "docs/training.md"} <= documents


LINK = re.compile(r"\]\(([^)#\s]+)(?:#[^)]*)?\)")


@pytest.mark.parametrize("document", DOCUMENTS, ids=lambda p: p.relative_to(ROOT).as_posix())
def test_every_relative_link_leads_to_a_file(document):
    """Pages moved between README.md and docs/: a link written for the old place breaks."""
    targets = [t for t in LINK.findall(document.read_text()) if "://" not in t]
    missing = [t for t in targets if not (document.parent / t).exists()]
    assert not missing, f"{document.name} links to missing files: {missing}"


def _tiny_dataset(folder: Path, astronaut: np.ndarray, per_class: int = 2) -> None:
    """Class folders of 48x48 crops around the astronaut's face, each class its own
    brightness (pre-cropped faces: no detection needed)."""
    face = astronaut[62:166, 172:276]
    for index, name in enumerate(CLASSES):
        for copy in range(per_class):
            crop = np.clip(face.astype(int) - 20 * index + 7 * copy, 0, 255).astype(np.uint8)
            small = crop[::2, ::2][:48, :48]
            save(np.ascontiguousarray(small), folder / name / f"{copy}.png")


@pytest.mark.parametrize(
    "code, data, settings",
    # A block that reads data you supply trains on it (TensorFlow): slow.
    [pytest.param(*block, marks=[pytest.mark.slow] if block[1] else []) for block in BLOCKS],
    ids=[f"{document}-block{i}" for i, (document, _, _) in enumerate(_FOUND)],
)
def test_python_block_runs_as_written(code, data, settings, tmp_path, astronaut):
    for name, value in settings.items():
        code, found = re.subn(rf"\b{name}=[^,)]+", f"{name}={value}", code)
        assert found, f"the block passes no {name}="
    (tmp_path / "examples").symlink_to(ROOT / "examples")
    for name in data:
        _tiny_dataset(tmp_path / name, astronaut)
    env = {**os.environ, "FER8_HOME": str(tmp_path / "fer8-home")}  # crop cache
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(ROOT / "src"), env.get("PYTHONPATH")]))
    process = subprocess.run(
        [sys.executable, "-c", code],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=900,
    )
    assert process.returncode == 0, process.stderr
    assert process.stderr == ""  # the library logs through `logging` and prints nothing
    assert process.stdout.strip()


def _transcripts() -> list[tuple[str, str]]:
    """(command, expected output) for every ``$ fer8 ...`` line in a plain ``` block."""
    found = []
    for info, block, _ in _fenced_blocks(README):
        if info:
            continue
        parts = re.split(r"^\$ (fer8 .*)$", block, flags=re.M)
        found.extend(zip(parts[1::2], (p.strip("\n") for p in parts[2::2])))
    return found


@pytest.mark.parametrize("command, expected", _transcripts())
def test_terminal_transcript_is_what_fer8_prints(command, expected):
    """The table as a terminal shows it (--format table is a terminal's default);
    confidences may differ by a few tenths of a point between CPUs."""
    args = [
        arg
        for word in shlex.split(command)[1:]
        for arg in (
            sorted(str(p.relative_to(ROOT)) for p in ROOT.glob(word)) if "*" in word else [word]
        )
    ]
    env = {
        **os.environ,
        "PYTHONPATH": os.pathsep.join(
            filter(None, [str(ROOT / "src"), os.environ.get("PYTHONPATH")])
        ),
    }
    process = subprocess.run(
        [sys.executable, "-m", "fer8", *args, "--format", "table"],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert process.returncode == 0, process.stderr
    confidence = re.compile(r"(\d+\.\d)%$", re.M)
    # Character for character, columns included, but for the confidences ...
    assert confidence.sub("?%", process.stdout.rstrip("\n")) == confidence.sub("?%", expected)
    # ... which are within half a point.
    got, want = confidence.findall(process.stdout), confidence.findall(expected)
    assert len(got) == len(want)
    assert list(map(float, got)) == pytest.approx(list(map(float, want)), abs=0.5)
