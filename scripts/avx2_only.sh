#!/usr/bin/env bash
# Run a command as on a CPU with AVX2 alone: AVX-512, AMX and AVX-VNNI hidden from CPUID
# (scripts/avx2_only.c says how and what it leaves), so that ONNX Runtime, OpenCV and numpy
# take the kernels that such a machine runs. For benchmarks and accuracy checks of the int8
# network on AVX2 (issue 41) on a machine that has more. Needs gcc and the CPU flag
# cpuid_fault (Linux; KVM guests have it).
#
# Usage: bash scripts/avx2_only.sh COMMAND [ARGS...]
#   e.g. bash scripts/avx2_only.sh python scripts/bench_pipeline.py --repeats 3
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"

if ! grep -qw cpuid_fault /proc/cpuinfo; then
    echo "avx2_only.sh: this CPU (or its hypervisor) cannot fault on CPUID (no cpuid_fault flag)" >&2
    exit 3
fi
library="${TMPDIR:-/tmp}/fer8-avx2-only-$(sha256sum "$here/avx2_only.c" | cut -c1-12).so"
if [ ! -f "$library" ]; then
    gcc -O2 -shared -fPIC -Wall -Wextra -o "$library.$$" "$here/avx2_only.c"
    mv "$library.$$" "$library"
fi
LD_PRELOAD="$library${LD_PRELOAD:+:$LD_PRELOAD}" exec "$@"
