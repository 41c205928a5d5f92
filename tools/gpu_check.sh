#!/usr/bin/env bash
# The GPU check: run it first whenever a GPU machine is lent (about 15 minutes per session, all
# tries together). It builds for this GPU only, runs the CUDA tests, then times every op on the GPU
# against its PyTorch reference and its physical floor, and writes everything under $OUT.
#
#   bash tools/gpu_check.sh            # on the GPU machine (through the device tool's `run`)
#   bash tools/gpu_check.sh --dry-run  # the same steps on a CPU machine: CUDA off, rehearsal sizes
#
# Expects python3 with torch, pybind11, scikit-build-core, pytest, pytest-benchmark (and cupy for
# the cupy tests), nvcc and cmake; needs no network, nor scipy, matplotlib, onnx or faiss (the GPU
# machine has none of them: a test needing one skips). Its own timers bound the whole run to 8
# minutes (build 200 s, info 30 s, CUDA tests 90 s, benchmarks 150 s, summary 10 s); not yet run on
# a GPU. Rehearse it in a fresh clone with a Python that has no editable cion_fast installed (an
# editable install's import hook wins over PYTHONPATH: the info step then fails, by design), and
# once with only the GPU machine's packages (torch 2.11, cupy-cuda13x, timm, hypothesis, pytest,
# pytest-benchmark, pybind11, scikit-build-core).
# Each step's log goes to $OUT/<step>.log; a failing step is reported and the next still runs.
set -uo pipefail
cd "$(dirname "$0")/.."
dry_run=0
[[ "${1:-}" == "--dry-run" ]] && dry_run=1
out=${OUT:-$PWD/gpu_check_out}
mkdir -p "$out" && out=$(cd "$out" && pwd)
site=$(mktemp -d)/site
python=${PYTHON:-python3}
status=0

step() {  # step NAME TIMEOUT COMMAND...: runs it, logs to $out/NAME.log, remembers a failure
  local name=$1 limit=$2
  shift 2
  echo "== $name: $*"
  local start=$SECONDS
  timeout "$limit" "$@" >"$out/$name.log" 2>&1
  local rc=$?
  tail -n 25 "$out/$name.log"
  echo "== $name: exit $rc after $((SECONDS - start)) s"
  [[ $rc -ne 0 ]] && status=1
  return $rc
}

if [[ $dry_run -eq 1 ]]; then
  cuda=OFF arch=none device=cpu sizes=
else
  cuda=ON device=cuda sizes="--full --denoise-fraction 0.05"
  nvidia-smi | tee "$out/nvidia-smi.txt"
  # e.g. "9.0" -> 90: SASS for this device only (the CI build compiles every supported arch)
  arch=$(nvidia-smi --query-gpu=compute_cap --format=csv,noheader | head -n 1 | tr -d ' .')
fi
echo "cuda=$cuda arch=$arch out=$out site=$site"

# 1. build into a private target (nothing of the machine's environment is replaced)
CMAKE_BUILD_PARALLEL_LEVEL=$(nproc) CION_FAST_CUDA=$cuda step build 200 "$python" -m pip install --no-build-isolation --no-deps --no-cache-dir -q \
  --target "$site" -C "cmake.define.CMAKE_CUDA_ARCHITECTURES=$arch" -C build-dir=build/gpu_check . || { echo "build failed"; exit 1; }
export PYTHONPATH=$site
# From $out, never the repository root: `python -c` puts the working directory first on sys.path,
# where the source tree's cion_fast (no compiled _C) would shadow the build.
(cd "$out" && step info 30 "$python" -c "import json, cion_fast; info = cion_fast.build_info(); \
print(cion_fast.__file__); print(json.dumps(info)); print('cuda_available', cion_fast.cuda_available()); \
assert cion_fast.__file__.startswith('$site'); assert $dry_run or (info['cuda'] and cion_fast.cuda_available())") || status=1

# 2. the CUDA tests (from python_tests/, so the source tree's cion_fast is not imported), all of them
# even after a failure or a module that cannot be imported: one GPU run has to tell everything.
(cd python_tests && step tests 90 "$python" -m pytest -m cuda -q -rfEs -p no:cacheprovider \
  --continue-on-collection-errors) || status=1

# 3. every op (benchmarks/bench_<op>.py, correctness first): GPU time, ratio to the PyTorch
#    reference on the same device, ratio to the floor; and the denoising levels with the features
#    on the GPU, at 1/20 of LUPerson-NL (530K frames) so that the host's share stays short. One
#    file at a time, each with its own JSON, so a file that runs out of time loses only itself;
#    no file starts once the step's budget is spent.
bench_budget=150 bench_start=$SECONDS
for bench in benchmarks/bench_*.py; do
  left=$((bench_budget - (SECONDS - bench_start)))
  name=$(basename "$bench" .py)
  if [[ $left -le 5 ]]; then echo "== $name: skipped, the benchmark budget (${bench_budget} s) is spent"; status=1; continue; fi
  (cd benchmarks && step "$name" $((left < 60 ? left : 60)) "$python" -m pytest "$name.py" --benchmark-only \
    --device "$device" $sizes -q -p no:cacheprovider --benchmark-json "$out/$name.json") || status=1
done
step summary 10 "$python" benchmarks/report.py "$out"/bench_*.json --out "$out/gpu_summary.md"
cat "$out/gpu_summary.md" 2>/dev/null
echo "gpu_check: $([[ $status -eq 0 ]] && echo all steps passed || echo some steps FAILED) (logs in $out)"
exit $status
