#!/usr/bin/env bash
# The wheel is the product (issue 14): build it, install it into a fresh virtual environment (not
# editable, run from outside the source tree) and run the installed `grasp-lora` there.
# The `demo` extra (the 240 MB embedded model) is deliberately left out: the core install must
# work without it and say how to get it. Ends with one line `wheel-check: N passed, M failed`.
set -uo pipefail
cd "$(dirname "$0")/.."
ROOT=$PWD
PYTHON=${PYTHON:-python3}
TORCH=${TORCH:-torch==2.13.0}
OUT=${WHEEL_CHECK_DIR:-$ROOT/build/wheel-check}
VENV=$OUT/venv
WORK=$OUT/work
started=$(date +%s)

rm -rf "$OUT" "$ROOT/build/lib" "$ROOT"/build/bdist.*  # stale build/lib would leak deleted files into the wheel
mkdir -p "$WORK"
set -e
"$PYTHON" -m venv "$VENV"
"$VENV/bin/python" -m pip install -q --upgrade pip
"$VENV/bin/python" -m pip wheel -q --no-deps -w "$OUT/dist" "$ROOT"
WHEEL=$(ls "$OUT"/dist/grasp_lora-*.whl)
"$VENV/bin/python" -m pip install -q "$TORCH"
"$VENV/bin/python" -m pip install -q -c "$ROOT/constraints.txt" "$WHEEL"
set +e
echo "wheel-check: built and installed $(basename "$WHEEL") in $(( $(date +%s) - started ))s"

export GRASP_LORA_CACHE=$OUT/cache HF_HUB_OFFLINE=1 OMP_NUM_THREADS=1 TOKENIZERS_PARALLELISM=false
cd "$WORK"  # no source tree on sys.path: everything below comes from the installed wheel
GL=$VENV/bin/grasp-lora
TINY=(model.name=tiny-llama "data.source_sizes={train: 4, val: 2, micro_dev: 0, test: 0}"
      "data.target_sizes={train: 4, val: 2, micro_dev: 2, test: 2}" train.epochs=1 train.grad_accum=2)
passed=0; failed=0
check() {  # check NAME COMMAND...: the command must exit 0
  local name=$1; shift
  if "$@" > "$OUT/$name.log" 2>&1; then passed=$((passed + 1)); echo "  ok      $name"
  else failed=$((failed + 1)); echo "  FAILED  $name"; tail -n 20 "$OUT/$name.log"; fi
}
expect_error() {  # expect_error NAME TEXT COMMAND...: exit 2 with one stderr line containing TEXT
  local name=$1 text=$2; shift 2
  "$@" > "$OUT/$name.out" 2> "$OUT/$name.log"; local rc=$?
  if [ "$rc" = 2 ] && [ "$(grep -c . "$OUT/$name.log")" = 1 ] && grep -qF -- "$text" "$OUT/$name.log"; then
    passed=$((passed + 1)); echo "  ok      $name"
  else failed=$((failed + 1)); echo "  FAILED  $name (exit $rc, wanted 2 and one line with: $text)"; cat "$OUT/$name.log"; fi
}

check imported-from-wheel bash -c "'$VENV/bin/python' -c 'import grasp_lora; print(grasp_lora.__file__)' | grep -q '^$VENV/'"
check only-the-package "$VENV/bin/python" -c "import zipfile, sys
names = zipfile.ZipFile(sys.argv[1]).namelist()
tops = {n.split('/')[0] for n in names}
assert all(t == 'grasp_lora' or t.startswith('grasp_lora-') for t in tops), tops  # no benchmarks/, tests/" "$WHEEL"
check version bash -c "'$GL' --version | grep -qx 'grasp-lora $(basename "$WHEEL" | cut -d- -f2)'"
check config bash -c "'$GL' config demo train.lr=3e-4 | grep -q '^  lr: 0.0003$'"
check demo-pools "$VENV/bin/python" -c 'from grasp_lora.data.demo import demo_pool
assert all(len(demo_pool(t, l)) == 360 for t in ("mlqa", "xlsum") for l in ("en", "ar", "zh"))'
check prepare-demo bash -c "'$GL' prepare demo --run-dir run && test -s run/data/ar/train.jsonl && test -s run/data/manifest.json"
check train-adapter-tiny bash -c "'$GL' train-adapter demo --lang target --run-dir run_tiny --quiet ${TINY[*]@Q} && test -s run_tiny/adapters/ar/adapter_model.safetensors"
expect_error embedded-model-needs-extra "grasp-lora[demo]" "$GL" train-adapter demo --lang source --run-dir run --quiet
expect_error tensorboard-needs-extra "grasp-lora[tracking]" "$GL" train-adapter demo --lang source --run-dir run_tiny --quiet --report-to tensorboard "${TINY[@]}"

echo "wheel-check: $passed passed, $failed failed ($(( $(date +%s) - started ))s in all)"
[ "$failed" = 0 ]
