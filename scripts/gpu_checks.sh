#!/usr/bin/env bash
# The GPU checks of the paper-scale and precision work, in one run on a machine with a CUDA GPU
# (each step time-boxed, so one slow step cannot starve the others):
#   1. mmss bench paper-scale --device cuda   throughput on the GPU + the paper profile's projection
#   2. tests/test_text_modes.py               on-the-fly text modes, incl. the CUDA-only tests
#   3. mmss bench precision                   bf16 vs fp32: speed, data-wait share, metric agreement
#   4. mmss bench extract (text, regions)     batched vs one-at-a-time text extraction (BERT-base
#                                             shapes), region extraction overhead
# Usage: scripts/gpu_checks.sh DATA_ROOT FEATURES_ROOT [CATEGORY]   (a demo category with its
# extracted features, e.g. outputs/data outputs/features home after `make demo`)
# Logs go to $OUT (default gpu_checks/); PY (default python3) is the interpreter that has torch
# with CUDA; the precision runs go to $PREC_RUNS (default /tmp/mmss_precision), their light files
# are packed into $OUT/precision_runs.tgz for `mmss bench precision --report-only` elsewhere.
set -u
OUT=${OUT:-gpu_checks}
PY=${PY:-python3}
PREC_RUNS=${PREC_RUNS:-/tmp/mmss_precision}
DATA=${1:?data root}; FEAT=${2:?features root}; CAT=${3:-home}
mkdir -p "$OUT"
export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}" PYTHONUNBUFFERED=1 TOKENIZERS_PARALLELISM=false

step() {
    local name=$1 limit=$2; shift 2
    local t0; t0=$(date +%s)
    echo "=== $name (limit ${limit} s) start $(date -u +%T)"
    timeout "$limit" "$@" > "$OUT/$name.log" 2>&1
    local rc=$?
    echo "=== $name rc=$rc after $(( $(date +%s) - t0 )) s"
    grep -v "it/s\]\|s/it\]" "$OUT/$name.log" | tail -n 45
}

{ nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv
  "$PY" -c "import torch, torchvision, transformers; print('torch', torch.__version__, 'torchvision', torchvision.__version__, 'transformers', transformers.__version__, 'cuda', torch.cuda.is_available() and torch.cuda.get_device_name(0))"
  nproc; } > "$OUT/env.log" 2>&1
cat "$OUT/env.log"

step paper_scale "${LIMIT_PAPER_SCALE:-200}" "$PY" -m mmss_lib bench paper-scale --device cuda
step cuda_tests "${LIMIT_TESTS:-110}" "$PY" -m pytest -q -p no:cacheprovider tests/test_text_modes.py
step precision "${LIMIT_PRECISION:-170}" "$PY" -m mmss_lib bench precision --data-root "$DATA" --category "$CAT" \
    --features "$FEAT" --out "$PREC_RUNS" --systems mmss mcr bimpm --seeds 0 1 2 --device cuda --n-jobs 3 \
    --num-threads 4 --json "$OUT/precision.json"
tar czf "$OUT/precision_runs.tgz" -C "$(dirname "$PREC_RUNS")" --exclude='*.pt' --exclude='ssp' \
    --exclude='*.npz' "$(basename "$PREC_RUNS")" 2>/dev/null
step extract "${LIMIT_EXTRACT:-60}" "$PY" -m mmss_lib bench extract --device cuda --only text regions \
    --text-model bert-base-random --repeat 2
echo "=== done $(date -u +%T)"
