#!/usr/bin/env bash
# Long fuzz runs of fer8: the image reader (coverage-guided with atheris), the predictor
# (Hypothesis mutations), and the normal suite's fuzz tests with many more, random,
# examples (the HTTP API against its schema, raw HTTP abuse, the LINE webhook).
#
#   scripts/fuzz.sh                  # about 25 minutes on 2 cores
#   FUZZ_SECONDS=3600 FUZZ_PREDICT=10000 FUZZ_SCALE=50 scripts/fuzz.sh
#
# Needs the dev extra (pip install -e '.[dev]'). Each part prints its figures (inputs,
# crashes, hangs, duration); failing inputs are saved under $FUZZ_OUT (default fuzz-out/)
# with their recipe, and the script exits non-zero if any part found something.
set -uo pipefail
cd "$(dirname "$0")/.."

python="${PYTHON:-python}"
out="${FUZZ_OUT:-fuzz-out}"
seconds="${FUZZ_SECONDS:-900}"
predict="${FUZZ_PREDICT:-2000}"
scale="${FUZZ_SCALE:-10}"
mkdir -p "$out"
status=0
started=$(date +%s)

echo "== images: load_image, ${seconds} s =="
"$python" scripts/fuzz.py images --seconds "$seconds" --out "$out/images" || status=1

echo "== predict: Predictor.predict, ${predict} inputs =="
"$python" scripts/fuzz.py predict --examples "$predict" --out "$out/predict" || status=1

echo "== the suite's fuzz tests, examples x${scale}, drawn at random =="
FER8_FUZZ_SCALE="$scale" "$python" -m pytest -q -p no:cacheprovider \
    tests/test_fuzz_images.py tests/test_fuzz_serve.py --hypothesis-show-statistics \
    > "$out/pytest.log" 2>&1 || status=1
tail -n 1 "$out/pytest.log"
# Hypothesis' statistics: how many inputs each property test tried (Schemathesis draws
# its cases inside one test, up to 10 x FUZZ_SCALE per operation and mode, not listed).
awk '/^tests\/.*::/ {test = $1} /passing, .* failing/ {print "  " test " " $2 " passing, " $4 " failing"; n += $2}
     END {print "  " n " inputs in the listed property tests"}' "$out/pytest.log"

echo "== done in $(( $(date +%s) - started )) s, status ${status} (failing inputs under ${out}/) =="
exit "$status"
