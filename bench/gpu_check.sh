#!/usr/bin/env bash
# The GPU path, checked in minutes on one CUDA GPU: run from the repository root as `bash bench/gpu_check.sh`.
#
# One line per check, then a summary line; exits 1 if any check failed, 2 (with one line) without CUDA.
#   1. tests/test_gpu.py (-m gpu): GhostModuleV3's deploy form on CUDA, exact in fp32 (atol 1e-4) and
#      within fp16's precision in fp16 (rtol 1e-2, atol 1e-2 against the fp32 training form); a
#      synchronised latency; a 3-epoch trial of rtdetr-l with the hand placement
#   2. latency of rtdetr-l at 640, batch 1, fp16 and fp32: median and spread of >= 200 synchronised runs
#   3. a warm start: a checkpoint of the base made here, then one epoch of the full-size rtdetr-l at 640 on
#      the built-in data with GhostModuleV3 at layer 5 warm-started from it; prints the tensors loaded and
#      the GPU's busy share during training (nvidia-smi, sampled every 0.5 s)
#   4. a sweep of 2 trials (the base's two seeds) packed onto the one GPU at --gpus-per-trial 0.5: both
#      child runs finish, and they trained at the same time
# Budget: about 8 minutes on one data-centre GPU. Everything is written under $GPU_CHECK_OUT (a new
# temporary folder by default) and the MLflow store there; nothing is downloaded.
set -u
cd "$(dirname "$0")/.."
PY=${PYTHON:-.venv/bin/python}
[ -x "$PY" ] || PY=python3
if ! "$PY" -c 'import sys, torch; sys.exit(0 if torch.cuda.is_available() else 1)' 2>/dev/null; then
    echo "gpu_check: no CUDA device here (torch.cuda.is_available() is False): nothing checked" >&2
    exit 2
fi
export YOLO_OFFLINE=1 YOLO_AUTOINSTALL=false
OUT=${GPU_CHECK_OUT:-$(mktemp -d /tmp/gpu-check-XXXXXX)}
mkdir -p "$OUT"
export RTDETR_SEARCH_CACHE="$OUT/cache"
failed=0
passed=0
line() { # name, status (0 = pass), detail
    if [ "$2" -eq 0 ]; then
        passed=$((passed + 1))
        echo "PASS $1: $3"
    else
        failed=$((failed + 1))
        echo "FAIL $1: $3"
    fi
}
started=$(date +%s)
device=$("$PY" -c 'import torch; print(torch.cuda.get_device_name(0), "| torch", torch.__version__, "| CUDA", torch.version.cuda)')
echo "gpu_check on $device; output in $OUT"

# 1. the gpu tests
"$PY" -m pytest -q -m gpu tests/test_gpu.py -p no:cacheprovider > "$OUT/test_gpu.log" 2>&1
rc=$?
line "test_gpu" $rc "$(tail -n 1 "$OUT/test_gpu.log")"

# 2. latency of rtdetr-l at 640, fp16 and fp32
"$PY" - > "$OUT/latency.log" 2>&1 <<'EOF'
import torch
from search import ultra
ultra.offline()
from ultralytics.nn.tasks import RTDETRDetectionModel
from search.cost import deploy_form, latency, timing_plan
device = torch.device("cuda:0")
model = deploy_form(RTDETRDetectionModel("rtdetr-l.yaml", verbose=False))
for precision in ("fp16", "fp32"):
    t = latency(model, 640, device, **timing_plan(device, precision))
    print(f"{precision} median {t['latency_ms']:.2f} ms, IQR {t['latency_iqr_ms']:.2f} ms, p90 "
          f"{t['latency_p90_ms']:.2f} ms over {t['latency_runs']} runs;", end=" ")
EOF
rc=$?
line "latency rtdetr-l 640 batch 1" $rc "$(tail -n 1 "$OUT/latency.log")"

# 3. warm start: a base checkpoint made here, then one epoch of rtdetr-l at 640 with GhostModuleV3 at layer 5
"$PY" - "$OUT/base.pt" > "$OUT/checkpoint.log" 2>&1 <<'EOF'
import sys
from search import ultra
ultra.offline()
from ultralytics import RTDETR
from search.data import CLASS_NAMES
from search.materialize import materialize
from search.space import load_space
from search.training import with_classes
import yaml, pathlib
space = load_space("modes")
base = with_classes(materialize(space, {"stage3": "keep"})[0], len(CLASS_NAMES))
path = pathlib.Path(sys.argv[1]).with_suffix(".yaml")
path.write_text(yaml.safe_dump(base, sort_keys=False))
RTDETR(str(path)).save(sys.argv[1])
EOF
rc=$?
if [ $rc -ne 0 ]; then
    line "warm-started trial" 1 "could not make the base checkpoint: $(tail -n 1 "$OUT/checkpoint.log")"
else
    (while true; do nvidia-smi --query-gpu=utilization.gpu --format=csv,noheader,nounits -i 0 2>/dev/null | head -n 1; sleep 0.5; done) > "$OUT/busy.log" &
    sampler=$!
    "$PY" -m search.trial --space modes --params '{"stage3": "ori"}' --budget full --epochs 1 --imgsz 640 \
        --batch 16 --device 0 --weights "$OUT/base.pt" --workers 4 --out "$OUT/trial" > "$OUT/trial.json" 2> "$OUT/trial.log"
    rc=$?
    kill $sampler 2>/dev/null
    busy=$(awk '$1 ~ /^[0-9]+$/ {s += $1; n++} END {if (n) printf "%.0f%% mean over %d samples", s / n, n; else print "not sampled"}' "$OUT/busy.log")
    detail=$("$PY" - "$OUT/trial.json" <<'EOF'
import json, sys
try:
    r = json.loads(open(sys.argv[1]).read())
except ValueError:
    print("no result"); sys.exit(1)
ok = r.get("status") == "ok" and r.get("warm_start_loaded", 0) > 0 and r.get("epochs_done") == 1
print(f"status {r.get('status')}, warm start loaded {r.get('warm_start_loaded')} skipped {r.get('warm_start_skipped')} "
      f"new {r.get('warm_start_new')}, fresh layers {r.get('warm_start_fresh_layers')}, mAP50-95 {r.get('map50_95', float('nan')):.4f}, "
      f"train {r.get('train_s', 0):.0f} s, amp {r.get('amp')}, latency {r.get('latency_ms', 0):.2f} ms {r.get('latency_precision')}")
sys.exit(0 if ok else 1)
EOF
)
    rc2=$?
    [ $rc -ne 0 ] && detail="exit $rc: $(tail -n 1 "$OUT/trial.log")"
    line "warm-started rtdetr-l trial, 1 epoch at 640" $((rc | rc2)) "$detail; GPU busy $busy"
fi

# 4. two trials packed onto one GPU
"$PY" -m search.run --space modes --sampler grid --samples 1 --budget cpu --epochs 2 --gpus-per-trial 0.5 \
    --max-concurrent 2 --cpus-per-trial 2 --name packed --storage-path "$OUT/sweeps" \
    --tracking-uri "sqlite:///$OUT/mlflow.db" > "$OUT/sweep.log" 2>&1
rc=$?
detail=$("$PY" - "$OUT/mlflow.db" <<'EOF'
import sys, mlflow
client = mlflow.MlflowClient(tracking_uri=f"sqlite:///{sys.argv[1]}")
exp = client.get_experiment_by_name("rtdetr-ghost-search")
runs = [r for r in client.search_runs([exp.experiment_id]) if r.data.tags.get("sweep.role") == "trial"] if exp else []
done = [r for r in runs if r.info.status == "FINISHED" and r.data.tags.get("trial.status") == "ok"]
spans = sorted((r.info.start_time, r.info.end_time) for r in done)
overlap = len(spans) == 2 and spans[1][0] < spans[0][1]
gpus = sorted({r.data.tags.get("gpu_ids") for r in done})
print(f"{len(done)} of {len(runs)} child runs finished, on GPU ids {gpus}, trained at the same time: {overlap}")
sys.exit(0 if len(done) == 2 and overlap else 1)
EOF
)
rc2=$?
[ $rc -ne 0 ] && detail="exit $rc: $(tail -n 1 "$OUT/sweep.log"); $detail"
line "2 trials packed at 0.5 GPU" $((rc | rc2)) "$detail"

echo "gpu_check: $passed passed, $failed failed in $(( $(date +%s) - started )) s"
[ $failed -eq 0 ]
