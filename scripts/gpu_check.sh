#!/bin/bash
# First GPU run of csrbench, in one command, on a fresh GPU machine without network:
#   1. build mamba-ssm from the source archives in ../shared/device/ (its build_mamba.sh; ~160 s on an H100)
#   2. install csrbench (pip --no-deps --no-index; PYTHONPATH=$PWD is set anyway)
#   3. pytest -m cuda                       (tests/test_cuda.py and the other GPU tests)
#   4. csrbench bench train --device cuda   (the six paper models, batch 32, LR patch 64, fp32 + bf16)
# It leaves results/bench/train.json and results/bench/gpu_check.log (copied to $OUT too when that is a
# folder: the device tool's return folder). A failed step is logged and the next one still runs; the exit
# status is 1 if any step failed, 3 without a GPU (checked before anything is written).
#
# Time: the whole run must fit in 8 minutes on one H100, the build included. Every step runs under
# `timeout`; build, install and pytest have fixed caps, and the benchmark gets what is left before the
# deadline (BUDGET seconds after the start) and stops starting new models 45 s before its own timeout,
# so a model it is measuring can finish. The benchmark writes its JSON after each model and precision, so a
# timeout keeps the finished ones. On the GPU the benchmark times ITERATIONS iterations after WARMUP per loop
# (fewer than the CPU default of 30, to fit the budget); models are run most important first.
#
# Usage (from the repository root):
#   bash scripts/gpu_check.sh [--dry-run] [--log-dir DIR] [--budget SECONDS]
#   --dry-run    print each step's command and timeout, run nothing (works without a GPU)
#   --log-dir    where train.json and gpu_check.log go (default results/bench)
#   --budget     total seconds (default 480)
# Environment: PYTHON (default python3), SHARED_DEVICE (default ../shared/device, else shared/device),
#   ITERATIONS (default 4), WARMUP (default 2), MODELS (default "mambacsr mambair hat swinir swin2sr hst").
set -uo pipefail

DRY=0
LOG_DIR=results/bench
BUDGET=480
while [ $# -gt 0 ]; do
  case $1 in
    --dry-run) DRY=1 ;;
    --log-dir) LOG_DIR=${2:?--log-dir needs a folder}; shift ;;
    --budget) BUDGET=${2:?--budget needs seconds}; shift ;;
    -h|--help) sed -n '2,24p' "$0"; exit 0 ;;
    *) echo "gpu_check.sh: unknown option $1 (see --help)" >&2; exit 2 ;;
  esac
  shift
done
case $BUDGET in ''|*[!0-9]*) echo "gpu_check.sh: --budget must be whole seconds, got '$BUDGET'" >&2; exit 2 ;; esac

cd "$(dirname "$0")/.." || exit 2
PY=${PYTHON:-python3}
ITERATIONS=${ITERATIONS:-4}
WARMUP=${WARMUP:-2}
MODELS=${MODELS:-mambacsr mambair hat swinir swin2sr hst}
if [ -n "${SHARED_DEVICE:-}" ]; then SHARED=$SHARED_DEVICE
elif [ -d ../shared/device ]; then SHARED=../shared/device
else SHARED=shared/device; fi
CAP_BUILD=220; CAP_INSTALL=30; CAP_PYTEST=120; BENCH_RESERVE=45

MODEL_ARGS=""
for m in $MODELS; do MODEL_ARGS="$MODEL_ARGS --model $m"; done
CMD_BUILD="bash $SHARED/build_mamba.sh mamba_ssm"
CMD_INSTALL="$PY -m pip install --no-deps --no-build-isolation --no-index -q -e ."
CMD_PYTEST="$PY -m pytest -m cuda -q -rA -p no:cacheprovider --continue-on-collection-errors tests"
bench_cmd() {  # $1: the step's timeout in seconds
  local stop=$(( $1 - BENCH_RESERVE )); [ $stop -lt 0 ] && stop=0
  echo "$PY -m harness.cli bench train --device cuda$MODEL_ARGS --iterations $ITERATIONS --warmup $WARMUP" \
       "--max-seconds $stop --out $LOG_DIR/train.json"
}

if [ $DRY = 1 ]; then
  echo "gpu_check.sh dry run: budget ${BUDGET}s, shared archives in $SHARED, results in $LOG_DIR"
  BENCH_T=$(( BUDGET - CAP_BUILD - CAP_INSTALL - CAP_PYTEST ))
  echo "step build timeout=${CAP_BUILD}s: $CMD_BUILD"
  echo "step install timeout=${CAP_INSTALL}s: $CMD_INSTALL"
  echo "step pytest timeout=${CAP_PYTEST}s: $CMD_PYTEST"
  echo "step bench timeout=${BENCH_T}s (at least; what the earlier steps leave of the budget): $(bench_cmd $BENCH_T)"
  exit 0
fi

if ! "$PY" -c "import torch, sys; sys.exit(0 if torch.cuda.is_available() else 1)" 2>/dev/null; then
  echo "gpu_check.sh: no CUDA GPU visible to $PY (torch.cuda.is_available() is False); nothing run" >&2
  exit 3
fi

START=$(date +%s)
DEADLINE=$(( START + BUDGET ))
mkdir -p "$LOG_DIR"
LOG=$LOG_DIR/gpu_check.log
: > "$LOG"
exec > >(tee -a "$LOG") 2>&1
FAILED=0
SUMMARY=""

step() {  # step NAME CAP COMMAND...: run under timeout (the cap, or what is left of the budget), log the result
  local name=$1 cap=$2; shift 2
  local left=$(( DEADLINE - $(date +%s) ))
  local t=$(( cap < left ? cap : left ))
  if [ $t -le 5 ]; then
    echo "== $name: skipped, the ${BUDGET}s budget is spent"; SUMMARY="$SUMMARY\n$name: skipped (budget)"; FAILED=1
    return
  fi
  echo "== $name (timeout ${t}s): $*"
  local t0=$(date +%s)
  timeout -k 10 "$t" "$@"
  local rc=$?
  local dt=$(( $(date +%s) - t0 ))
  [ $rc = 124 ] && echo "== $name: timed out after ${t}s"
  [ $rc != 0 ] && FAILED=1
  echo "== $name: exit $rc in ${dt}s"
  SUMMARY="$SUMMARY\n$name: exit $rc, ${dt}s"
}

echo "gpu_check.sh: $(date -u +%FT%TZ), budget ${BUDGET}s, commit $(git rev-parse HEAD 2>/dev/null || echo unknown)"
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader 2>/dev/null || true
"$PY" -c "import torch; print('torch', torch.__version__, 'CUDA', torch.version.cuda, torch.cuda.get_device_name(0))"

if [ -f "$SHARED/build_mamba.sh" ]; then
  step build $CAP_BUILD $CMD_BUILD
else
  echo "== build: $SHARED/build_mamba.sh not found; the scan runs on the PyTorch path (set SHARED_DEVICE)"
  SUMMARY="$SUMMARY\nbuild: not found"; FAILED=1
fi
export PYTHONPATH=$PWD/.device-cache/site:$PWD${PYTHONPATH:+:$PYTHONPATH}
"$PY" -c "import mamba_ssm; print('mamba_ssm', mamba_ssm.__version__)" || echo "mamba_ssm is not importable"

step install $CAP_INSTALL $CMD_INSTALL
step pytest $CAP_PYTEST $CMD_PYTEST
BENCH_T=$(( DEADLINE - $(date +%s) - 5 ))
# shellcheck disable=SC2046  # the command is split on spaces on purpose
step bench $BENCH_T $(bench_cmd $BENCH_T)

echo -e "gpu_check.sh summary ($(( $(date +%s) - START ))s of ${BUDGET}s):$SUMMARY"
if [ -n "${OUT:-}" ] && [ -d "${OUT}" ]; then
  cp -f "$LOG_DIR/train.json" "$OUT/" 2>/dev/null || echo "no $LOG_DIR/train.json to copy"
  cp -f "$LOG" "$OUT/"
fi
exit $FAILED
