#!/usr/bin/env bash
# One GPU session in at most 9 minutes (every step has a hard timeout; a failing step does not
# stop the next one). Run from the repository root:
#
#   benchmarks/gpu.sh OUT_DIR [FASHION_MNIST_DIR]
#
# OUT_DIR receives 4 files: log.txt (everything, in order, ending with one table of every bench
# row), pytest.txt, runs.md (every training run's last epoch) and results.tar.gz (the bench-*.json
# records of docs/performance.md, tta.json, and each experiment's table.json, table.md and
# figure.png). FASHION_MNIST_DIR holds the four IDX files
# (train-images-idx3-ubyte[.gz], ...); without it the training section is skipped. The benchmarks
# make their own JPEGs. PYTHON picks the interpreter (default python3), RUNS_DIR the run folders.
#
#   1. machine: GPUs, torch and torchvision versions                            (20 s)
#   2. the tests that touch CUDA, and a small fast subset, on this GPU          (60 s)
#   3. alexnet bench --device cuda, one group at a time, each its own JSON:
#      step (+ bf16 logits check) 60 s, e2e (GPU decode vs synthetic and vs CPU workers) 60 s,
#      pipeline 35 s, compile 35 s
#   4. Fashion-MNIST: time to accuracy of the default recipe (3 seeds)          (70 s)
#      and the paper's ablations at their defaults, 2 seeds, each cut at 45 s   (7 x 45 s)
#      (a smoke run of the CUDA path: the paper-scale commands are in docs/experiments.md)
# Every step's limit is cut to what is left of DEADLINE (default 540 s) and a step with under 10 s
# left is skipped, so the script ends within DEADLINE plus the archive.
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
res="$runs/results"  # every JSON, table and figure, archived into OUT_DIR/results.tar.gz at the end
mkdir -p "$out" "$runs" "$res" || exit 2
log="$out/log.txt"
: >"$log"
started=$SECONDS

say() { echo "== [$((SECONDS - started)) s] $*" | tee -a "$log"; }
deadline=${DEADLINE:-540}  # seconds for the whole script: a step gets what is left, if less than its own limit
step() {  # LIMIT COMMAND...: run with a hard timeout, everything into the log, the status noted
  local limit=$1 left=$((deadline - (SECONDS - started)))
  shift
  [ $left -lt $limit ] && limit=$left
  if [ $limit -lt 10 ]; then say "SKIPPED (out of time): $*"; return 0; fi
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
timeout -k 5 60 $py -m pytest -q -p no:cacheprovider -m "not slow" -ra \
  tests/data/test_gpudecode.py tests/training/test_towers.py tests/system/test_runtime.py tests/test_models.py tests/training/test_engine.py \
  tests/bench/test_bench.py >"$out/pytest.txt" 2>&1
say "pytest rc=$? (0 passed, 1 failures, 124 timed out): $(tail -1 "$out/pytest.txt")"

# -- 3. the benchmarks on CUDA (docs/performance.md): each group its own JSON, so a timeout costs one --
bench() {  # GROUP LIMIT FLAGS...
  local group=$1 limit=$2
  shift 2
  say "bench $group"
  step "$limit" $py -m alexnet bench --device cuda --only "$group" --json "$res/bench-$group.json" "$@"
}
if [ "$cuda" = 1 ]; then
  bench step 60 --warmup 1 --repeats 5
  bench e2e 60 --workers 8 --warmup 1 --repeats 3
  bench pipeline 35 --workers 8 --warmup 1 --repeats 3
  bench compile 35 --warmup 1 --repeats 3
  # the bf16-vs-fp32 logits check: a failure is loud
  $py - "$res/bench-step.json" >>"$log" 2>&1 <<'PY' || say "GPU CHECK FAILED: bf16 logits out of tolerance (see bench-step.json)"
import json, sys
checks = json.load(open(sys.argv[1]))["checks"]
print(*checks, sep="\n")
sys.exit(not checks or not all(c["passed"] for c in checks))
PY
  # one table of every row measured, into the log
  $py - "$res" >>"$log" 2>&1 <<'PY'
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
  # time to accuracy of the default recipe (3 seeds: 4 epochs at 99 px each), docs/performance.md
  say "time to accuracy: the default recipe, 3 seeds"
  step 70 $py -m alexnet bench --only accuracy --seeds 0 1 2 --train "--data $data --device cuda" --out "$runs/tta" --json "$res/tta.json"
  # the paper's ablations (docs/experiments.md), one experiment at a time so that a timeout costs one
  if $py -m alexnet experiment --list >/dev/null 2>&1; then
    for name in $($py -m alexnet experiment --list | cut -d' ' -f1); do
      say "experiment $name"
      step 45 $py -m alexnet experiment "$name" --device cuda --seeds 2 --out "$res/experiments/$name"
      find "$res/experiments/$name" -name '*.pt' -delete 2>/dev/null  # the tables are drawn: free the disk
    done
  else
    say "experiments: skipped (this tree has no alexnet experiment)"
  fi

  $py - "$runs" >"$out/runs.md" 2>>"$log" <<'PY'
import json, sys
from pathlib import Path
print("| run | epochs | final top-1 | best top-1 | final top-5 | train img/s (mean) | train+val s |")
print("|---|---|---|---|---|---|---|")
root = Path(sys.argv[1])
for m in sorted(root.rglob("metrics.jsonl")):
    run = m.parent
    rows = [json.loads(l) for l in m.read_text().splitlines() if l.strip()]
    if not rows:
        continue
    cfg = json.loads((run / "config.json").read_text())
    secs = sum(r["train_seconds"] + r["val_seconds"] for r in rows)
    ips = sum(r["images_per_second"] for r in rows) / len(rows)
    print(f"| {run.relative_to(root)} | {len(rows)}/{cfg['epochs']} | {100*rows[-1]['val_top1']:.2f} | "
          f"{100*max(r['val_top1'] for r in rows):.2f} | {100*rows[-1]['val_top5']:.2f} | {ips:.0f} | {secs:.0f} |")
PY
  cat "$out/runs.md" >>"$log"
else
  if [ -z "$data" ]; then why="no FASHION_MNIST_DIR given"; elif [ ! -d "$data" ]; then why="no folder $data"; else why="no CUDA device"; fi
  say "training: skipped ($why)"
fi
# the bench and time-to-accuracy JSONs, the experiments' tables and figures in one archive (the
# device tool brings back at most 8 files); the experiments' run folders (checkpoints) stay behind
(cd "$res" && find . \( -name '*.json' -o -name '*.md' -o -name '*.png' \) -not -path '*/checkpoints/*' -size -2M \
  | tar -czf "$out/results.tar.gz" -T -) 2>>"$log"
say "done in $((SECONDS - started)) s; files: $(ls "$out" | tr '\n' ' ')"
