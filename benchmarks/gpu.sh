#!/usr/bin/env bash
# One-shot GPU check, for a machine with an NVIDIA GPU and PyTorch installed:
#   1. `alexnet bench` on CUDA (docs/performance.md) and the bf16-vs-fp32 logits check,
#   2. training runs on Fashion-MNIST (recipe sweep, the long run, the 227 px network, the paper's init),
#   3. the fast test suite on CUDA.
# Usage: benchmarks/gpu.sh OUT_DIR FASHION_MNIST_DIR     (writes a few files to OUT_DIR)
set -uo pipefail
out=$1
data=$2
runs=${RUNS_DIR:-/tmp/gpu-runs}
export PYTHONPATH="$PWD/src" PYTHONUNBUFFERED=1
py=${PYTHON:-python3}
mkdir -p "$out" "$runs"
log="$out/log.txt"

{ nvidia-smi -L; $py -c 'import torch, torchvision; print("torch", torch.__version__, "torchvision", torchvision.__version__)'; } 2>&1 | tee "$log"

# the benchmark suite on CUDA: steps against torchvision's recipe (fp16 autocast + GradScaler), the
# bf16 matmul ceiling, the pipeline with normalization on the GPU, and bf16 vs fp32 logits (a check
# that fails the script's bench.json "passed" when out of tolerance)
timeout 300 $py -m alexnet bench --device cuda --workers 4 --json "$out/bench.json" 2>&1 | tee "$out/bench.txt" >>"$log"
$py -c 'import json, sys; c = json.load(open(sys.argv[1]))["checks"]; print(*c, sep="\n"); sys.exit(not all(x["passed"] for x in c))' \
  "$out/bench.json" >>"$log" 2>&1 || echo "GPU CHECK FAILED: bf16 logits out of tolerance (see $out/bench.json)" | tee -a "$log"

train() {  # NAME TIMEOUT FLAGS...
  local name=$1 limit=$2
  shift 2
  echo "== $name: $*" >>"$log"
  timeout "$limit" $py -m alexnet train --data "$data" --out "$runs" --name "$name" "$@" >>"$log" 2>&1
  echo "rc=$?" >>"$log"
}
# the recipe sweep and long runs of docs/results.md (each flag spelled out: defaults change)
for size in 67 99; do
  for epochs in 4 5; do
    train "s$size-b128-e$epochs" 60 --image-size "$size" --batch-size 128 --epochs "$epochs"
  done
done
train s99-b128-e4-seed1 60 --image-size 99 --batch-size 128 --epochs 4 --seed 1
train s67-b256-e5 60 --image-size 67 --batch-size 256 --epochs 5
train s67-b256-lr04-e5 60 --image-size 67 --batch-size 256 --lr 0.04 --epochs 5
train s99-b256-e5 60 --image-size 99 --batch-size 256 --epochs 5
train paper2012-plateau-e5 60 --model alexnet2012 --schedule plateau --lr 0.01 --epochs 5
train s67-e15 120 --image-size 67 --epochs 15
train s227-e15 150 --image-size 227 --epochs 15

timeout 120 $py -m pytest -q -x -m "not slow" tests/test_train.py tests/test_models.py 2>&1 | tail -15 >"$out/pytest.txt"

train s67-e30 150 --image-size 67 --epochs 30

$py - "$runs" >"$out/runs.md" <<'PY'
import json, sys
from pathlib import Path
print("| run | epochs | final top-1 | best top-1 | final top-5 | train img/s (mean) | train+val s |")
print("|---|---|---|---|---|---|---|")
for run in sorted(Path(sys.argv[1]).iterdir()):
    m = run / "metrics.jsonl"
    if not m.is_file():
        continue
    rows = [json.loads(l) for l in m.read_text().splitlines() if l.strip()]
    cfg = json.loads((run / "config.json").read_text())
    secs = sum(r["train_seconds"] + r["val_seconds"] for r in rows)
    ips = sum(r["images_per_second"] for r in rows) / len(rows)
    print(f"| {run.name} | {len(rows)}/{cfg['epochs']} | {100*rows[-1]['val_top1']:.2f} | "
          f"{100*max(r['val_top1'] for r in rows):.2f} | {100*rows[-1]['val_top5']:.2f} | {ips:.0f} | {secs:.0f} |")
PY
cat "$out/runs.md" "$out/pytest.txt"
