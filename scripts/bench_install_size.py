"""Install size: what a fresh virtual environment weighs after ``pip install`` of fer8.

For each install target (by default ``.``, ``.[train]``, ``.[serve]`` and
``.[train,serve]``, relative to the repository root), the script

1. makes a fresh virtual environment in a temporary folder (``python -m venv``; pip
   and whatever else ``venv`` puts there stay at the versions it brings, nothing is
   upgraded),
2. runs ``<venv>/bin/python -m pip install --quiet <repo><extras>``: a normal,
   non-editable install from the package index pip is configured with,
3. measures the **total size of the venv folder**: the sum of the sizes of its
   regular files (``st_size``, not disk blocks; symbolic links are neither followed
   nor counted),
4. measures **each installed distribution**: inside the venv's python, the files
   listed by ``importlib.metadata.distributions()`` (``dist.files``, resolved with
   ``dist.locate_file``; missing files skipped), summed per distribution,

and deletes the virtual environment. MB are 10^6 bytes.

The report, on stdout, is Markdown: a table of targets with the total venv size,
then per target the distributions of ``--min-mb`` (default 5) MB or more with their
size and share of the venv, the smaller ones summed as "others", and the bytes that
no distribution lists (the interpreter links, ``pyvenv.cfg``, ``__pycache__``
folders of files pip did not record).

Usage::

    python3 scripts/bench_install_size.py [--json OUT.json] [TARGET ...]

where a TARGET is an extras suffix such as ``.[train]`` (``.`` is the repository
root); ``--python`` picks the interpreter that makes the venvs. Installing
TensorFlow takes minutes; each target is installed from scratch.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import stat
import subprocess
import sys
import tempfile
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
DEFAULT_TARGETS = (".", ".[train]", ".[serve]", ".[train,serve]")
MB = 1e6

log = logging.getLogger("bench_install_size")

#: Runs inside the venv's python: ``[[name, version, bytes], ...]`` on stdout as JSON.
DIST_SIZES = r"""
import importlib.metadata as md, json, os
seen = set()
rows = []
for dist in md.distributions():
    name = dist.metadata["Name"]
    key = name.lower().replace("_", "-").replace(".", "-")
    if key in seen:  # the same distribution on two sys.path entries: count it once
        continue
    seen.add(key)
    total = 0
    paths = set()
    for f in dist.files or ():
        path = os.path.realpath(dist.locate_file(f))
        if path in paths:
            continue
        paths.add(path)
        try:
            st = os.lstat(path)
        except OSError:
            continue
        if os.path.isfile(path):
            total += st.st_size
    rows.append([name, dist.version, total])
print(json.dumps(rows))
"""


@dataclass
class Distribution:
    """One installed distribution and the bytes of the files its RECORD lists."""

    name: str
    version: str
    bytes: int

    @property
    def mb(self) -> float:
        return self.bytes / MB


@dataclass
class Result:
    """The measurements of one install target."""

    target: str
    venv_bytes: int
    install_seconds: float
    distributions: list[Distribution] = field(default_factory=list)

    @property
    def venv_mb(self) -> float:
        return self.venv_bytes / MB

    @property
    def listed_bytes(self) -> int:
        """Bytes of the files that some distribution lists."""
        return sum(d.bytes for d in self.distributions)


def folder_bytes(folder: Path) -> int:
    """Sum of the sizes of the regular files under ``folder`` (links not followed)."""
    total = 0
    for dirpath, _dirnames, filenames in os.walk(folder):
        for name in filenames:
            st = os.lstat(os.path.join(dirpath, name))
            if stat.S_ISREG(st.st_mode):
                total += st.st_size
    return total


def run(cmd: list[str]) -> str:
    """Run ``cmd`` and return its stdout; on failure log its output and raise."""
    log.debug("$ %s", " ".join(cmd))
    proc = subprocess.run(cmd, capture_output=True, text=True, check=False)
    if proc.returncode:
        log.error("%s failed (%d):\n%s%s", cmd[0], proc.returncode, proc.stdout, proc.stderr)
        raise subprocess.CalledProcessError(proc.returncode, cmd, proc.stdout, proc.stderr)
    return proc.stdout


def measure(target: str, python: str) -> Result:
    """Install ``target`` in a fresh venv made by ``python`` and measure it."""
    extras = target[1:] if target.startswith(".") else target
    spec = f"{ROOT}{extras}"
    with tempfile.TemporaryDirectory(prefix="fer8-size-") as tmp:
        venv = Path(tmp) / "venv"
        log.info("%s: making a venv in %s", target, venv)
        run([python, "-m", "venv", str(venv)])
        venv_python = str(venv / "bin" / "python")
        log.info("%s: pip install %s", target, spec)
        start = time.perf_counter()
        run([venv_python, "-m", "pip", "install", "--quiet", spec])
        seconds = time.perf_counter() - start
        log.info("%s: installed in %.0f s; measuring", target, seconds)
        rows = json.loads(run([venv_python, "-c", DIST_SIZES]))
        dists = sorted(
            (Distribution(n, v, b) for n, v, b in rows), key=lambda d: (-d.bytes, d.name.lower())
        )
        result = Result(target, folder_bytes(venv), seconds, dists)
    log.info("%s: %.1f MB", target, result.venv_mb)
    return result


def markdown(results: list[Result], min_mb: float, python_version: str) -> str:
    """The report: the targets' totals, then each target's large distributions."""
    lines = [
        "## Install size",
        "",
        f"A fresh `python -m venv` (Python {python_version}) with "
        "`pip install <repo><extras>` (non-editable). MB = 10^6 bytes, the sum of "
        "the files' sizes (not disk blocks).",
        "",
        "| Install | venv MB |",
        "|---|---:|",
    ]
    for r in results:
        spec = "fer8" + r.target[1:] if r.target.startswith(".") else r.target
        lines.append(f"| `pip install {spec}` | {r.venv_mb:,.0f} |")
    for r in results:
        total = r.venv_bytes
        big = [d for d in r.distributions if d.mb >= min_mb]
        small = [d for d in r.distributions if d.mb < min_mb]
        small_bytes = sum(d.bytes for d in small)
        unlisted = total - r.listed_bytes
        lines += [
            "",
            f"### `{r.target}`: {r.venv_mb:,.1f} MB",
            "",
            "| Distribution | Version | MB | Share |",
            "|---|---|---:|---:|",
        ]
        for d in big:
            lines.append(f"| {d.name} | {d.version} | {d.mb:,.1f} | {d.bytes / total:.1%} |")
        lines.append(
            f"| others ({len(small)} distributions under {min_mb:g} MB) | | "
            f"{small_bytes / MB:,.1f} | {small_bytes / total:.1%} |"
        )
        lines.append(
            f"| not listed by any distribution | | {unlisted / MB:,.1f} | {unlisted / total:.1%} |"
        )
    return "\n".join(lines) + "\n"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "targets",
        nargs="*",
        default=list(DEFAULT_TARGETS),
        help="extras suffixes of the repository root (default: %(default)s)",
    )
    parser.add_argument(
        "--python",
        default=sys.executable,
        help="the interpreter that makes the venvs (default: this one)",
    )
    parser.add_argument(
        "--min-mb",
        type=float,
        default=5.0,
        help="distributions under this many MB are summed as 'others'",
    )
    parser.add_argument("--json", type=Path, help="also write the measurements here")
    parser.add_argument("-v", "--verbose", action="store_true", help="log the commands")
    args = parser.parse_args()
    logging.basicConfig(
        level=logging.DEBUG if args.verbose else logging.INFO,
        format="%(asctime)s %(levelname)s %(message)s",
    )

    python_version = run(
        [args.python, "-c", "import platform; print(platform.python_version())"]
    ).strip()
    results = [measure(target, args.python) for target in args.targets]
    sys.stdout.write(markdown(results, args.min_mb, python_version))
    if args.json:
        data = {
            "python": python_version,
            "mb": MB,
            "min_mb": args.min_mb,
            "targets": [
                {**asdict(r), "venv_mb": r.venv_mb, "unlisted_bytes": r.venv_bytes - r.listed_bytes}
                for r in results
            ],
        }
        args.json.write_text(json.dumps(data, indent=2) + "\n")
        log.info("wrote %s", args.json)


if __name__ == "__main__":
    main()
