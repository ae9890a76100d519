#!/usr/bin/env bash
# The GPU check (docs/scale.md#the-gpu-check): on a machine with a CUDA GPU and only torch, torchvision and
# numpy (no internet, no pytest needed), in under 10 minutes on an H200:
#   1. CUDA smoke runs of the trainer: base, pcr and mgr train a few steps in bf16 and channels_last and
#      finish (the repository has no CUDA-only tests; the suite is CPU-only, so these stand in for them);
#   2. step time and images/s of base, pcr and mgr on ResNet-18 at 32x32, without and with --compile,
#      against the plain torchvision loop (bench/step_time.py --reference), with peak CUDA memory;
#   3. bench/results/gpu_check.json and the table in docs/gpu.md, against the targets:
#      base >= 40 000 img/s, mgr step <= 2x base step.
# The data is CIFAR-shaped and synthetic (10 classes of 3x32x32 images written as an image folder) and the
# generator is trained for a few steps on it: step time does not depend on what the pixels show.
#
#   bench/gpu_check.sh                          # the real check (CUDA)
#   bench/gpu_check.sh --device cpu --quick     # the same steps on the CPU in seconds (tests/test_gpu_check.py)
#   options: --out FILE (bench/results/gpu_check.json)  --doc FILE (docs/gpu.md)  --work DIR (a temporary one)
set -euo pipefail
cd "$(dirname "$0")/.."

DEVICE=cuda QUICK=0 OUT=bench/results/gpu_check.json DOC=docs/gpu.md WORK="" ARGS="$*"
while [ $# -gt 0 ]; do
  case "$1" in
    --device) DEVICE=$2; shift 2 ;;
    --quick) QUICK=1; shift ;;
    --out) OUT=$2; shift 2 ;;
    --doc) DOC=$2; shift 2 ;;
    --work) WORK=$2; shift 2 ;;
    *) echo "gpu_check.sh: unknown option $1" >&2; exit 2 ;;
  esac
done
PY=${PYTHON:-$( [ -x .venv/bin/python ] && echo .venv/bin/python || echo python3 )}
[ -n "$WORK" ] || { WORK=$(mktemp -d -t mgr-gpu-check-XXXX); trap 'rm -rf "$WORK"' EXIT; }
mkdir -p "$WORK"
if [ "$QUICK" = 1 ]; then  # seconds on a CPU: SmallCNN at 16x16, tiny batches, one round, no --compile
  MODEL=smallcnn RES=16 BATCH=8 PER_CLASS=6 GEN_STEPS=2 BN_BATCHES=4 SMOKE_STEPS=2 TIMING=(--quick) COMPILES=(eager)
else                       # the batch a GPU needs to be busy; 20 steps x 5 interleaved rounds per method
  MODEL=resnet18 RES=32 BATCH=512 PER_CLASS=100 GEN_STEPS=200 BN_BATCHES=64 SMOKE_STEPS=20 TIMING=(--steps 20 --rounds 5)
  COMPILES=(eager compile)
fi
if [ "$DEVICE" != cpu ]; then
  "$PY" -c "import torch, sys; sys.exit(0 if torch.cuda.is_available() else 'no CUDA GPU: run with --device cpu --quick')"
fi
t0=$(date +%s)
echo "== environment"; "$PY" -c "import torch, torchvision; print('torch', torch.__version__, 'torchvision', torchvision.__version__, 'cuda', torch.cuda.is_available() and torch.cuda.get_device_name(0))"

echo "== CIFAR-shaped data: 10 classes x $PER_CLASS images, 3x${RES}x${RES}"
"$PY" - "$WORK/cifar-like" "$PER_CLASS" "$RES" <<'EOF'
import sys
from pathlib import Path
import numpy as np
from PIL import Image
root, n, res = Path(sys.argv[1]), int(sys.argv[2]), int(sys.argv[3])
rng = np.random.default_rng(0)
for c in range(10):  # a colour and a frequency per class, plus noise: classes a classifier can tell apart
    (root / f"class{c}").mkdir(parents=True, exist_ok=True)
    yy, xx = np.mgrid[0:res, 0:res] / res
    base = np.stack([np.sin(2 * np.pi * (c + 1) * (xx + k / 3)) for k in range(3)], -1)
    for i in range(n):
        img = 127.5 + 80 * base + rng.normal(0, 30, (res, res, 3))
        Image.fromarray(img.clip(0, 255).astype(np.uint8)).save(root / f"class{c}" / f"{i}.png")
EOF
DATA=(--dataset "imagefolder:$WORK/cifar-like" --resolution "$RES" --ratio 1)

echo "== a generator for that split ($GEN_STEPS steps)"
"$PY" -m mgr train-generator "${DATA[@]}" --steps "$GEN_STEPS" --batch-size 64 --sample-every "$GEN_STEPS" --bn-batches "$BN_BATCHES" \
  --device "$DEVICE" --no-fid --quiet --out "$WORK/generator.pt" --work-dir "$WORK/generator.work" > "$WORK/generator.log"

echo "== CUDA-path smoke runs: base, pcr, mgr ($SMOKE_STEPS steps each)"
for m in base pcr mgr; do
  "$PY" -m mgr train "${DATA[@]}" --model "$MODEL" --method "$m" --steps "$SMOKE_STEPS" --eval-every "$SMOKE_STEPS" \
    --batch-size "$BATCH" --probes-per-class 2 --probe-real 40 --device "$DEVICE" --generator "$WORK/generator.pt" \
    --runs-dir "$WORK/runs" --run-id "smoke-$m" --quiet | tail -1
done

for c in "${COMPILES[@]}"; do
  echo "== step time, $MODEL ${RES}x${RES}, batch $BATCH, $c"
  flag=(); [ "$c" = compile ] && flag=(--compile)
  "$PY" bench/step_time.py "${DATA[@]}" --model "$MODEL" --methods base,pcr,mgr --batch-size "$BATCH" \
    --device "$DEVICE" --generator "$WORK/generator.pt" "${TIMING[@]}" "${flag[@]}" --out "$WORK/speed_$c.json"
done

echo "== results -> $OUT, $DOC"
"$PY" - "$WORK" "$OUT" "$DOC" "$(( $(date +%s) - t0 ))" "$ARGS" "$MODEL" "${COMPILES[@]}" <<'EOF'
import json, sys, time
from pathlib import Path
work, out, doc, seconds, args, model, *modes = sys.argv[1:]
work = Path(work)
smoke = {m: json.loads((work / "runs" / f"smoke-{m}" / "status.json").read_text())["state"] for m in ("base", "pcr", "mgr")}
speed = {m: json.loads((work / f"speed_{m}.json").read_text()) for m in modes}
checks = {}
for mode, r in speed.items():
    rows = {row["method"]: row for row in r["results"]}
    checks[mode] = {"base_img_per_s": rows["base"]["img_per_s"], "base_target_40k": rows["base"]["img_per_s"] >= 40_000,
                    "mgr_over_base": rows["mgr"]["ratio_to_base"], "mgr_target_2x": rows["mgr"]["ratio_to_base"] <= 2.0}
first = next(iter(speed.values()))
result = {"command": "bench/gpu_check.sh" + (f" {args}" if args else ""), "date": time.strftime("%Y-%m-%d"),
          "device_name": first["device_name"], "torch": first["torch"], "seconds": int(seconds), "model": model,
          "smoke_runs": smoke, "targets": checks, "step_time": speed}
Path(out).parent.mkdir(parents=True, exist_ok=True)
Path(out).write_text(json.dumps(result, indent=1) + "\n")
lines = ["# GPU check", "",
         f"Measured {result['date']} on {result['device_name']}, torch {result['torch']}, in {seconds} s:", "",
         f"    {result['command']}", "",
         f"{model} at {first['resolution']}x{first['resolution']} (CIFAR-shaped synthetic data, 10 classes), batch "
         f"{first['batch_size']}, bf16 autocast and channels_last on CUDA; median of "
         f"{first['rounds']} interleaved rounds of {first['steps']} steps. The reference is the plain "
         "torchvision loop of bench/step_time.py (fp32, DataLoader). Smoke runs (base, pcr, mgr): "
         + ", ".join(f"{m} {s}" for m, s in smoke.items()) + ".", "",
         "| compile | method | ms / step | images / s | step / base | peak CUDA memory (MiB) |", "|---|---|---|---|---|---|"]
for mode, r in speed.items():
    for row in r["results"]:
        lines.append(f"| {mode} | {row['method']} | {row['ms_per_step']} | {row['img_per_s']:,.0f} | "
                     f"{row['ratio_to_base']} | {row.get('peak_mem_mib', '-')} |")
lines += ["", "| compile | target | measured | met |", "|---|---|---|---|"]
for mode, c in checks.items():
    lines.append(f"| {mode} | base >= 40 000 img/s | {c['base_img_per_s']:,.0f} | {'yes' if c['base_target_40k'] else 'no'} |")
    lines.append(f"| {mode} | mgr step <= 2x base | {c['mgr_over_base']}x | {'yes' if c['mgr_target_2x'] else 'no'} |")
Path(doc).parent.mkdir(parents=True, exist_ok=True)
Path(doc).write_text("\n".join(lines) + "\n")
print("\n".join(lines))
EOF
