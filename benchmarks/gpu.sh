#!/usr/bin/env bash
# One GPU session in at most ~6 minutes (every step has a hard timeout; a failing step does not
# stop the next one). Run from the repository root:
#
#   benchmarks/gpu.sh OUT_DIR [FASHION_MNIST_DIR]
#
# OUT_DIR receives at most 6 files, flat: log.txt (everything, in order), pytest.txt,
# bench-step.json, bench-compile.json, bench-pipeline.json, bench-e2e.json (docs/performance.md
# describes them), and runs.md when training ran. FASHION_MNIST_DIR holds the four IDX files
# (train-images-idx3-ubyte[.gz], ...); without it the training section is skipped. The benchmarks
# make their own JPEGs. PYTHON picks the interpreter (default python3), RUNS_DIR the run folders.
#
#   1. machine: GPUs, torch and torchvision versions                            (20 s)
#   2. the tests that touch CUDA, and a small fast subset, on this GPU          (75 s)
#   3. alexnet bench --device cuda, one group at a time, each its own JSON:
#      step (+ bf16 logits check) 60 s, e2e (GPU decode vs synthetic and vs CPU workers) 70 s,
#      pipeline 50 s, compile 45 s
#   4. training runs on Fashion-MNIST (the section at the end, for the lead)    (30 s)
set -uo pipefail
if [ $# -lt 1 ]; then
  echo "usage: benchmarks/gpu.sh OUT_DIR [FASHION_MNIST_DIR]   (run from the repository root)" >&2
  exit 2
fi
out=$1
data=${2:-}
runs=${RUNS_DIR:-/tmp/gpu-runs}
py=${PYTHON:-python3}
export PYTHONPATH="$PWD/src" PYTHONUNBUFFERED=1
mkdir -p "$out" "$runs" || exit 2
log="$out/log.txt"
: >"$log"
started=$SECONDS

say() { echo "== [$((SECONDS - started)) s] $*" | tee -a "$log"; }
step() {  # LIMIT COMMAND...: run with a hard timeout, everything into the log, the status noted
  local limit=$1
  shift
  timeout -k 5 "$limit" "$@" >>"$log" 2>&1
  local rc=$?
  [ $rc -eq 124 ] && say "TIMED OUT after $limit s: $*" || say "rc=$rc: $*"
  return 0
}

# -- 1. the machine --
say "machine"
step 10 nvidia-smi -L
step 20 $py -c 'import torch, torchvision, sys; print("python", sys.version.split()[0], "torch", torch.__version__, "torchvision", torchvision.__version__,
"cuda", torch.version.cuda, "devices", [torch.cuda.get_device_name(i) for i in range(torch.cuda.device_count())])'
cuda=$($py -c 'import torch; print(int(torch.cuda.is_available()))' 2>/dev/null || echo 0)
[ "$cuda" = 1 ] || say "NO CUDA DEVICE: the CUDA tests skip, the benchmarks and training are skipped"

# -- 2. tests: every test that touches CUDA, then a small fast subset (-m "not slow") --
# test_data_gpudecode: nvJPEG against the CPU loader; test_parallel: the two towers on cuda:0,cuda:0
# (one GPU is enough: both towers may share a device); test_runtime: the per-device choices;
# test_train: env.json's device. Modules needing packages this machine lacks skip themselves.
say "pytest"
timeout -k 5 75 $py -m pytest -q -p no:cacheprovider -m "not slow" -ra \
  tests/test_data_gpudecode.py tests/test_parallel.py tests/test_runtime.py tests/test_models.py tests/test_engine.py \
  tests/test_bench.py >"$out/pytest.txt" 2>&1
say "pytest rc=$? (0 passed, 1 failures, 124 timed out): $(tail -1 "$out/pytest.txt")"

# -- 3. the benchmarks on CUDA (docs/performance.md): each group its own JSON, so a timeout costs one --
bench() {  # GROUP LIMIT FLAGS...
  local group=$1 limit=$2
  shift 2
  say "bench $group"
  step "$limit" $py -m alexnet bench --device cuda --only "$group" --json "$out/bench-$group.json" "$@"
}
if [ "$cuda" = 1 ]; then
  bench step 60 --warmup 1 --repeats 5
  bench e2e 70 --workers 8 --warmup 1 --repeats 3
  bench pipeline 50 --workers 8 --warmup 1 --repeats 3
  bench compile 45 --warmup 1 --repeats 3
  # the bf16-vs-fp32 logits check: a failure is loud
  $py - "$out/bench-step.json" >>"$log" 2>&1 <<'PY' || say "GPU CHECK FAILED: bf16 logits out of tolerance (see bench-step.json)"
import json, sys
checks = json.load(open(sys.argv[1]))["checks"]
print(*checks, sep="\n")
sys.exit(not checks or not all(c["passed"] for c in checks))
PY
  # one table of every row measured, into the log
  $py - "$out" >>"$log" 2>&1 <<'PY'
import json, sys
from pathlib import Path
for f in sorted(Path(sys.argv[1]).glob("bench-*.json")):
    r = json.loads(f.read_text())
    m = r["machine"]
    print(f"\n{f.name}: {m.get('gpu')}, torch {m['torch']}, torchvision {m['torchvision']}, precision {m['precision']}")
    for row in r["rows"]:
        print(f"  {row['group']:8} {row['name'][:90]:90} {row['baseline_median']:>10,.0f} {row['ours_median']:>10,.0f} {row['ratio_median']:5.2f}x "
              f"[{row['ratio_spread'][0]:.2f}-{row['ratio_spread'][1]:.2f}]" + (f" compile {row['compile_seconds']:.0f} s" if "compile_seconds" in row else ""))
    for s in r["skipped"]:
        print(f"  skipped {s['group']}: {s['reason']}")
PY
else
  say "bench: skipped (no CUDA device)"
fi

# -- 4. training runs (the lead adds the Fashion-MNIST runs here; ~30 s left in the 6 minutes) --
train() {  # NAME TIMEOUT FLAGS...
  local name=$1 limit=$2
  shift 2
  say "train $name: $*"
  step "$limit" $py -m alexnet train --data "$data" --out "$runs" --name "$name" "$@"
}
if [ -n "$data" ] && [ -d "$data" ] && [ "$cuda" = 1 ]; then
  train s99-e1 30 --image-size 99 --epochs 1

  $py - "$runs" >"$out/runs.md" 2>>"$log" <<'PY'
import json, sys
from pathlib import Path
print("| run | epochs | final top-1 | best top-1 | final top-5 | train img/s (mean) | train+val s |")
print("|---|---|---|---|---|---|---|")
for run in sorted(Path(sys.argv[1]).iterdir()):
    m = run / "metrics.jsonl"
    if not m.is_file():
        continue
    rows = [json.loads(l) for l in m.read_text().splitlines() if l.strip()]
    if not rows:
        continue
    cfg = json.loads((run / "config.json").read_text())
    secs = sum(r["train_seconds"] + r["val_seconds"] for r in rows)
    ips = sum(r["images_per_second"] for r in rows) / len(rows)
    print(f"| {run.name} | {len(rows)}/{cfg['epochs']} | {100*rows[-1]['val_top1']:.2f} | "
          f"{100*max(r['val_top1'] for r in rows):.2f} | {100*rows[-1]['val_top5']:.2f} | {ips:.0f} | {secs:.0f} |")
PY
  cat "$out/runs.md" >>"$log"
else
  if [ -z "$data" ]; then why="no FASHION_MNIST_DIR given"; elif [ ! -d "$data" ]; then why="no folder $data"; else why="no CUDA device"; fi
  say "training: skipped ($why)"
fi
say "done in $((SECONDS - started)) s; files: $(ls "$out" | tr '\n' ' ')"
