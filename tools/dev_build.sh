#!/usr/bin/env bash
# In-place developer build: compiles cion_fast._C into ./cion_fast/ so that `PYTHONPATH=. pytest`
# runs against the working tree without reinstalling. CUDA off by default (it is slow to compile);
# CION_FAST_CUDA=ON tools/dev_build.sh to include it. Users install with `pip install .` instead.
set -euo pipefail
cd "$(dirname "$0")/.."
build_dir=${BUILD_DIR:-build/dev}
cmake -S . -B "$build_dir" -DCMAKE_BUILD_TYPE=Release -DCION_FAST_CUDA="${CION_FAST_CUDA:-OFF}" \
  -Dpybind11_DIR="$(python -m pybind11 --cmakedir)" -DPython_EXECUTABLE="$(command -v python)" >/dev/null
cmake --build "$build_dir" -j "${JOBS:-2}"
cp "$build_dir"/_C*.so cion_fast/
echo "built $(ls cion_fast/_C*.so)"
