#!/usr/bin/env bash
# Install the `fer` package (mini-Xception; the most used pip FER library) into its own
# virtual environment, .venv-fer, for scripts/bench_accuracy.py.
#
# `fer` declares heavy dependencies it does not need for still images (facenet-pytorch,
# moviepy, pandas ...), so it is installed with --no-deps plus what `fer.fer` imports.
# It calls pkg_resources, which setuptools 81 removed, hence setuptools<81; and OpenCV
# stays below 5 as in fer8 (5.0.0.93 dies with SIGBUS on import on some CPUs).
set -euo pipefail
venv=${1:-.venv-fer}
python3 -m venv "$venv"
"$venv/bin/pip" install --quiet --upgrade pip
"$venv/bin/pip" install --quiet --no-deps "fer==25.10.3"
"$venv/bin/pip" install --quiet "tensorflow>=2.16" "opencv-python-headless>=4.9,<5" requests \
    pillow numpy "setuptools<81"
"$venv/bin/python" -c "from fer.fer import FER; FER(); print('fer ready in $venv')"
