"""Long fuzz runs of fer8's image reader and predictor; ``scripts/fuzz.sh`` calls it.

Two targets, each printing one summary line of figures (inputs tried, crashes, hangs,
out-of-memory, duration) and saving every failing input under ``--out``:

``images``
    Coverage-guided with atheris (libFuzzer) on ``fer8.load_image``: Pillow's Python
    plugins are instrumented, the C decoders are not (no sanitizer build). The corpus
    starts from ``tests/fuzzing.py``'s seeds of every format and the hand-made hostile
    files under 1 MB, and grows in ``--out/corpus``. Per input: the time limit (libFuzzer's
    ``-timeout``) and the memory cap (``-rss_limit_mb``). Without atheris (no wheel for
    this Python), Hypothesis draws the mutations instead.
``predict``
    Hypothesis mutations through ``Predictor.predict`` (detection on and off) with a
    model (``--model``, by default the bundled one), every input against the rule of
    ``tests/fuzzing.py``; a watchdog stops the run if one input hangs.

A crash is any exception other than ``InvalidImageError``, or a result that breaks the
rule (a multi-line message, a malformed image); a hang an input over the time limit.
"""

from __future__ import annotations

import argparse
import faulthandler
import hashlib
import os
import re
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tests"))

import fuzzing  # noqa: E402

#: libFuzzer's artifact prefixes, by what happened.
KINDS = ("crash", "timeout", "oom", "leak", "slow-unit")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    sub = parser.add_subparsers(dest="target", required=True)
    images = sub.add_parser("images", help="load_image, coverage-guided with atheris")
    images.add_argument("--seconds", type=int, default=600)
    images.add_argument(
        "--engine",
        choices=["atheris", "hypothesis"],
        default=None,
        help="default: atheris when installed",
    )
    predict = sub.add_parser("predict", help="Predictor.predict, Hypothesis mutations")
    predict.add_argument("--examples", type=int, default=2000)
    predict.add_argument("--model", default=None, help="model file or name (default: bundled)")
    for target in (images, predict):
        target.add_argument("--out", type=Path, default=ROOT / "fuzz-out")
        target.add_argument("--time-limit", type=float, default=fuzzing.TIME_LIMIT_S)
    sub.add_parser("_atheris_child", add_help=False)  # the libFuzzer process itself
    args, rest = parser.parse_known_args()
    if args.target == "_atheris_child":
        return _atheris_child(rest)
    args.out.mkdir(parents=True, exist_ok=True)
    if args.target == "images":
        engine = args.engine or ("atheris" if _has_atheris() else "hypothesis")
        if engine == "atheris":
            return _images_atheris(args)
        return _hypothesis_run(args, "images", examples=None, seconds=args.seconds)
    return _hypothesis_run(args, "predict", examples=args.examples, seconds=None)


# --- images, coverage-guided -------------------------------------------------------------


def _has_atheris() -> bool:
    try:
        import atheris  # noqa: F401
    except ImportError:
        return False
    return True


def _images_atheris(args) -> int:
    """Runs libFuzzer in child processes until the time is up: libFuzzer stops at the
    first crash, so each failing input is saved and the run goes on from the corpus."""
    corpus = args.out / "corpus"
    corpus.mkdir(exist_ok=True)
    seeds = dict(fuzzing.make_seeds())
    for name, make in fuzzing.hostile_files().items():
        if name.startswith(("bomb", "thin", "tiny", "jpeg-progressive", "png-exif", "eps")):
            seeds[name] = make()
    for name, data in seeds.items():
        if 0 < len(data) <= 1 << 20:
            (corpus / f"seed-{name}").write_bytes(data)
    rss_limit = fuzzing.MEMORY_LIMIT_MB + 1024  # the cap, plus Python, libraries and corpus
    start = time.monotonic()
    runs, coverage, rounds = 0, "?", 0
    found = {kind: 0 for kind in KINDS}
    while (left := args.seconds - (time.monotonic() - start)) > 5:
        rounds += 1
        log = args.out / f"atheris-{rounds}.log"
        before = {p.name for p in args.out.iterdir()}
        with open(log, "w") as out:
            child = subprocess.run(
                [
                    sys.executable,
                    __file__,
                    "_atheris_child",
                    str(corpus),
                    f"-max_total_time={int(left)}",
                    f"-timeout={int(args.time_limit)}",
                    f"-rss_limit_mb={rss_limit}",
                    "-max_len=1048576",
                    f"-artifact_prefix={args.out}/",
                    "-print_final_stats=1",
                ],
                stdout=out,
                stderr=subprocess.STDOUT,
                cwd=ROOT,
            )
        text = log.read_text(errors="replace")
        runs += max((int(n) for n in re.findall(r"^#(\d+)", text, re.MULTILINE)), default=0)
        coverage = (re.findall(r"cov: (\d+)", text) or [coverage])[-1]
        new = sorted({p.name for p in args.out.iterdir()} - before - {log.name})
        for name in new:
            kind = name.split("-")[0]
            if kind in found:
                found[kind] += 1
                print(f"  {kind}: {args.out / name} (log {log})", flush=True)
        if child.returncode == 0 or not new:
            break  # the time is up (or libFuzzer itself failed: see the log)
    print(
        f"images (atheris): {runs:,} inputs, {found['crash']} crashes, {found['timeout']} "
        f"hangs (over {args.time_limit:.0f} s), {found['oom']} out of memory (over "
        f"{rss_limit} MB), {time.monotonic() - start:.0f} s, corpus "
        f"{len(list(corpus.iterdir()))} files, coverage {coverage} edges"
    )
    return 1 if found["crash"] + found["timeout"] + found["oom"] else 0


def _atheris_child(argv: list[str]) -> int:
    import atheris

    with atheris.instrument_imports():
        from PIL import Image, ImageOps  # noqa: F401

        Image.init()  # imports every plugin, inside the instrumented block
        import fer8.pipeline.images  # noqa: F401

    def one_input(data: bytes) -> None:
        # Any exception (InvalidImageError is not one: check_load takes it) is a crash;
        # libFuzzer's -timeout and -rss_limit_mb catch hangs and memory blow-ups.
        fuzzing.check_load(data, time_limit=float("inf"))

    atheris.Setup([sys.argv[0], *argv], one_input)
    atheris.Fuzz()
    return 0


# --- Hypothesis runs ----------------------------------------------------------------------


class _TimeUp(BaseException):
    """Ends a timed Hypothesis run: not an Exception, so Hypothesis does not take it for
    a failure to shrink, and lets it through at once."""


def _hypothesis_run(args, target: str, *, examples: int | None, seconds: int | None) -> int:
    """Draws mutated files at random and checks each; failures are saved, not raised, so
    that one run counts them all."""
    from hypothesis import HealthCheck, given, settings

    seeds = fuzzing.make_seeds()
    predictor = None
    if target == "predict":
        import fer8

        predictor = fer8.Predictor(args.model, batch_size=1)
    counts = {"inputs": 0, "crash": 0, "timeout": 0, "images": 0, "errors": 0, "faces": 0}
    slowest = [0.0, ""]
    start = time.monotonic()
    deadline = start + seconds if seconds else None
    rss_start = fuzzing.peak_rss_mb()

    def save(kind: str, recipe, data: bytes, problem: str) -> None:
        counts[kind] += 1
        digest = hashlib.sha1(data).hexdigest()[:16]
        (args.out / f"{kind}-{target}-{digest}").write_bytes(data)
        (args.out / f"{kind}-{target}-{digest}.txt").write_text(f"{recipe!r}\n{problem}\n")
        print(f"  {kind}: {recipe!r}: {problem[:300]}", flush=True)

    @settings(
        max_examples=examples or 10**9,
        database=None,
        deadline=None,
        suppress_health_check=list(HealthCheck),
    )
    @given(case=fuzzing.mutated_files(seeds, max_mutations=4 if target == "images" else 2))
    def run(case):
        if deadline and time.monotonic() > deadline:
            raise _TimeUp
        recipe, data = case
        counts["inputs"] += 1
        faulthandler.dump_traceback_later(max(60, 6 * args.time_limit), exit=True)
        try:
            if target == "images":
                outcome = fuzzing.check_load(data, time_limit=float("inf"))
            else:
                outcome = fuzzing.check_predict(
                    predictor, data, detect=counts["inputs"] % 2 == 0, time_limit=float("inf")
                )
        except Exception as exc:  # noqa: BLE001 - every failure is a finding, counted
            save("crash", recipe, data, f"{type(exc).__name__}: {exc}")
            return
        finally:
            faulthandler.cancel_dump_traceback_later()
        if outcome.seconds > slowest[0]:
            slowest[:] = [outcome.seconds, f"{recipe[0]} {len(data)} bytes"]
        if outcome.seconds > args.time_limit:
            save("timeout", recipe, data, f"took {outcome.seconds:.1f} s")
        if outcome.error is not None:
            counts["errors"] += 1
        else:
            counts["images"] += 1
            counts["faces"] += len(getattr(outcome.result, "faces", ()))

    try:
        run()
    except _TimeUp:
        pass
    took = time.monotonic() - start
    print(
        f"{target} (hypothesis): {counts['inputs']:,} inputs ({counts['images']:,} images, "
        f"{counts['errors']:,} InvalidImageError, {counts['faces']:,} faces), "
        f"{counts['crash']} crashes, {counts['timeout']} hangs (over {args.time_limit:.0f} s), "
        f"{took:.0f} s, slowest {slowest[0]:.2f} s ({slowest[1]}), peak RSS "
        f"{fuzzing.peak_rss_mb():,.0f} MB (from {rss_start:,.0f})"
    )
    return 1 if counts["crash"] + counts["timeout"] else 0


if __name__ == "__main__":
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
    sys.exit(main())
