#!/usr/bin/env bash
# The GPU check of issue 12, prepared to run ONCE on a borrowed CUDA machine (an H200, 16 cores)
# from the root of a copy of this repository:
#
#     bash benchmarks/gpu_check.sh            # everything under $OUT (default ./gpu-check-out)
#
# 1. a Python that imports torch and this checkout's headsweep: .venv/bin/python if it works
#    there (a .venv copied from another machine may point at a Python that is not there), else
#    python3 (the CUDA image's own, with torch; the checkout is importable from its root, no
#    install needed), else a new venv in /tmp with pip install -e '.[dev]' (needs a registry;
#    an existing .venv is never touched);
# 2. pytest -m gpu on tests/test_gpu.py (bf16 autocast, channels_last; the fractional-GPU Tune
#    sweep skips, naming the package, where ray/mlflow/optuna are not installed);
# 3. python -m benchmarks.gpu --device cuda --out $OUT/gpu.json (rewritten after every section,
#    so a timeout keeps what was measured).
# Every step runs under `timeout` against one deadline: the script ends within 8 minutes.
# Logs: $OUT/env.log, setup.log, pytest_gpu.log, bench.log; results: $OUT/gpu.json,
# $OUT/summary.txt. Exit status: 0 when both steps passed, else 1.
set -u
cd "$(dirname "$0")/.."
OUT="${OUT:-$PWD/gpu-check-out}"
mkdir -p "$OUT"
export RAY_AUTH_MODE=disabled PYTHONUNBUFFERED=1
START=$SECONDS
DEADLINE=450 # seconds after START: 30 s under the 8 minutes for kills and the summary

left() { echo $((DEADLINE - (SECONDS - START))); }
# capped CAP LOG CMD...: CMD under `timeout` for min(CAP, time left), output appended to LOG.
capped() {
  local cap=$1 log=$2 limit
  shift 2
  limit=$(left)
  ((limit > cap)) && limit=$cap
  if ((limit < 20)); then
    echo "skipped, ${limit}s left before the deadline: $*" | tee -a "$log"
    return 124
  fi
  echo "+ timeout ${limit}s $*" >>"$log"
  timeout --signal=TERM --kill-after=10 "$limit" "$@" >>"$log" 2>&1
}
works() { "$1" -c 'import torch, headsweep, yaml, sklearn' >>"$OUT/setup.log" 2>&1; }

{
  date -u
  echo "cores: $(nproc)"
  nvidia-smi || echo "nvidia-smi: not found"
} >"$OUT/env.log" 2>&1

PY=""
: >"$OUT/setup.log"
for candidate in .venv/bin/python python3; do
  if command -v "$candidate" >/dev/null && works "$candidate"; then
    PY=$candidate
    break
  fi
done
if [ -z "$PY" ]; then
  VENV=/tmp/headsweep-gpu-check-venv
  echo "no Python with torch and headsweep's needs: creating $VENV ($(left)s left)" >>"$OUT/setup.log"
  capped 60 "$OUT/setup.log" python3 -m venv --system-site-packages "$VENV" &&
    capped 180 "$OUT/setup.log" "$VENV/bin/pip" install -q --retries 1 --timeout 15 -e '.[dev]' &&
    works "$VENV/bin/python" && PY=$VENV/bin/python
fi
if [ -z "$PY" ]; then
  echo "FAILED: no Python with torch and headsweep (see $OUT/setup.log)" | tee "$OUT/summary.txt"
  exit 1
fi
echo "python: $PY" >>"$OUT/setup.log"
"$PY" - >>"$OUT/env.log" 2>&1 <<'EOF'
import sys, torch
print("python", sys.version.split()[0], sys.executable)
print("torch", torch.__version__, "cuda", torch.version.cuda, "available", torch.cuda.is_available())
if torch.cuda.is_available():
    print("device", torch.cuda.get_device_name())
EOF

# pytest first (well under a minute without the Tune sweep, about a minute with it), then the
# benchmark with the time left (about 3-4 minutes expected, most of it torch.compile).
capped 150 "$OUT/pytest_gpu.log" "$PY" -m pytest -m gpu -rs -p no:cacheprovider --durations=0 \
  tests/test_gpu.py
TESTS=$?
# bench.log: stderr progress lines, then the JSON again (it is printed when the run ends).
capped 300 "$OUT/bench.log" "$PY" -m benchmarks.gpu --device cuda --out "$OUT/gpu.json"
BENCH=$?

{
  echo "pytest -m gpu: exit $TESTS ($(tail -n 1 "$OUT/pytest_gpu.log"))"
  echo "benchmarks.gpu: exit $BENCH (1: a section recorded an error; 124: timed out)"
  echo "wall: $((SECONDS - START)) s"
} | tee "$OUT/summary.txt"
[ "$TESTS" -eq 0 ] && [ "$BENCH" -eq 0 ]
