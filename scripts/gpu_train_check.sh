#!/usr/bin/env bash
# One prepared GPU session (one H200, 15 minutes of device time in all), run from the repository
# root on a lent GPU machine: issue 10 (training at hardware speed, Table 1 runs) by default, or
# issue 11's ReActNet-18 CIFAR-10 run with RUNS=modern BENCH=0:
#   1. environment; the engine's C core built in place (export's check and the engine need it)
#   2. benchmarks/bench_train.py on CUDA: samples/s, s/epoch, share of the bf16 peak; the test
#      that a training step never waits for the GPU (tests/test_train_gpu_sync.py)
#   3. the MNIST and the CIFAR-10 training runs meant to reproduce Table 1 (recipes and their
#      overrides are parameters: MNIST_RECIPE / MNIST_SET, CIFAR_RECIPE / CIFAR_SET), each bounded
#      by a timeout; a run stopped by it saves its checkpoint (SIGTERM) and is still checked
#   4. each run exported to a packed model, and the engine's predictions compared with the torch
#      model's on the whole test split (every prediction must be equal)
# Installs nothing, needs no network: python3 must have torch and numpy, and the datasets must be
# in $BINARYNET_DATA. Logs and run folders go to $OUT (default ./gpu_train_out).
#
#   OUT=/some/dir MNIST_SET="epochs=60" CIFAR_SET="epochs=120 augment=crop_flip" \
#     bash scripts/gpu_train_check.sh
#   RUNS=modern BENCH=0 MODERN_SET="epochs=40" bash scripts/gpu_train_check.sh   # reactnet18_cifar10
#   bash scripts/gpu_train_check.sh --dry-run    # the same steps on the CPU with tiny runs (a minute)
# RUNS lists the runs (mnist, cifar10, modern); the modern networks are trained and evaluated but
# not exported (the engine does not run them yet).
set -u

DRY_RUN=0
[ "${1:-}" = "--dry-run" ] && DRY_RUN=1
OUT="${OUT:-$PWD/gpu_train_out}"
mkdir -p "$OUT"
export PYTHONPATH="$PWD/src${PYTHONPATH:+:$PYTHONPATH}"
export OMP_WAIT_POLICY="${OMP_WAIT_POLICY:-PASSIVE}"
PY="${PYTHON:-python3}"
START=$(date +%s)
status=0
RUNS="${RUNS:-mnist cifar10}"
BENCH="${BENCH:-1}"

if [ "$DRY_RUN" = 1 ]; then
  DEVICE=cpu BENCH_ARGS="--quick --devices cpu" GPU_OPTIONS=""
  MNIST_RECIPE=synthetic_mlp MNIST_SET="epochs=1 max_train_samples=500 max_eval_samples=200 model.hidden=32"
  CIFAR_RECIPE=synthetic_mlp
  CIFAR_SET="epochs=1 max_train_samples=500 max_eval_samples=200 model=cifar10_vgg model.in_channels=1 \
model.image_size=8 model.widths=[4,8,8] model.fc=[16,16] augment=crop_flip"
  MODERN_RECIPE=reactnet18_cifar10_cpu_quick
  MODERN_SET="epochs=1 max_train_samples=256 max_eval_samples=128 model.width=8"
  MNIST_TIMEOUT=120 CIFAR_TIMEOUT=120 MODERN_TIMEOUT=120
else
  DEVICE=cuda BENCH_ARGS="--devices cuda" GPU_OPTIONS="${GPU_OPTIONS:-amp channels_last}"
  MNIST_RECIPE="${MNIST_RECIPE:-mnist_mlp}" MNIST_SET="${MNIST_SET:-epochs=60}"
  CIFAR_RECIPE="${CIFAR_RECIPE:-cifar10_vgg}" CIFAR_SET="${CIFAR_SET:-epochs=120 augment=crop_flip}"
  MODERN_RECIPE="${MODERN_RECIPE:-reactnet18_cifar10}" MODERN_SET="${MODERN_SET:-epochs=40}"
  MNIST_TIMEOUT="${MNIST_TIMEOUT:-150}" CIFAR_TIMEOUT="${CIFAR_TIMEOUT:-420}"
  MODERN_TIMEOUT="${MODERN_TIMEOUT:-600}"
fi

# 1. environment and the engine's C core
{
  date -u
  command -v nvidia-smi >/dev/null && nvidia-smi --query-gpu=name,clocks.sm,power.draw --format=csv
  "$PY" -c "import torch; print('torch', torch.__version__, 'cuda', torch.cuda.is_available())"
  timeout 180 "$PY" setup.py -q build_ext --inplace 2>&1 | tail -n 3
  "$PY" -c "from binarynet.engine import _core; print('engine core:', _core.__file__)"
} > "$OUT/env.log" 2>&1 || status=1
cat "$OUT/env.log"

# 2. training speed of the paper's networks
[ "$BENCH" = 1 ] && { timeout 240 "$PY" benchmarks/bench_train.py $BENCH_ARGS --json "$OUT/bench_train.json" \
  > "$OUT/bench_train.log" 2>&1 || status=1
cat "$OUT/bench_train.log"

# 2b. a training step issues no host synchronisation (skipped without a GPU)
timeout 180 "$PY" -m pytest -q -p no:cacheprovider tests/test_train_gpu_sync.py > "$OUT/tests_sync.log" 2>&1 || status=1
tail -n 15 "$OUT/tests_sync.log"; }

# 3. one training run: recipe, "key=value ..." overrides, time limit, run name. The library is
# called directly so that the GPU options (RunOptions) need no command-line flags.
train_run() {
  echo "== train $1 ($2) on $DEVICE, options: ${GPU_OPTIONS:-none}, at most $3 s"
  timeout -s TERM "$3" "$PY" - "$1" "$2" "$OUT/$4" "$DEVICE" "$GPU_OPTIONS" <<'EOF'
import sys
from binarynet import threads
threads.set_passive_wait_policy()
from binarynet.train import RunOptions, TrainingInterrupted, recipes, train
name, sets, out, device, flags = sys.argv[1:6]
recipe = recipes.apply_overrides(recipes.get(name), recipes.parse_assignments(sets.split()))
options = RunOptions(out=out, device=device, progress=True, threads=threads.default_threads(),
                     **{flag: True for flag in flags.split()})
try:
    print(train(recipe, options))
except TrainingInterrupted as exc:  # the time limit: the checkpoint is saved, check it anyway
    print(exc)
EOF
}

# 4. export and the engine == torch check on the whole test split
engine_check() {
  echo "== export and engine check of $1"
  timeout 300 "$PY" - "$OUT/$1" <<'EOF'
import sys, numpy as np, torch
from binarynet import data, engine, export
from binarynet.train import RunOptions, checkpoint
from binarynet.train.inputs import load_split
run = sys.argv[1]
model, recipe, (scale, offset) = checkpoint.load_model(run)
test = load_split(recipe, recipe.test_split or "test", RunOptions(), 0)
images = test.images
with torch.no_grad():
    torch_pred = torch.cat([model(data.to_float(b, scale, offset)).argmax(1) for b in images.split(1000)]).numpy()
packed = export.export(model, images[:64], input_scale=scale, input_offset=offset)
packed.save(run + "/model.bnn")
engine_pred = engine.load(run + "/model.bnn").predict(images.numpy()).argmax(1)
labels = test.labels.numpy()
differ = int(np.sum(engine_pred != torch_pred))
print(f"{run}: {len(labels)} test images, torch error {100 * np.mean(torch_pred != labels):.2f}%, engine "
      f"error {100 * np.mean(engine_pred != labels):.2f}%, {differ} predictions differ")
sys.exit(1 if differ else 0)
EOF
}

for run in $RUNS; do
  case "$run" in
    mnist) train_run "$MNIST_RECIPE" "$MNIST_SET" "$MNIST_TIMEOUT" mnist ;;
    cifar10) train_run "$CIFAR_RECIPE" "$CIFAR_SET" "$CIFAR_TIMEOUT" cifar10 ;;
    modern) train_run "$MODERN_RECIPE" "$MODERN_SET" "$MODERN_TIMEOUT" modern ;;
    *) echo "unknown run $run (mnist, cifar10, modern)"; false ;;
  esac > "$OUT/train_$run.log" 2>&1 || status=1
  tail -n 5 "$OUT/train_$run.log"
done
for run in $RUNS; do
  [ "$run" = modern ] && continue  # the engine does not run the modern networks yet
  engine_check "$run" > "$OUT/engine_$run.log" 2>&1 || status=1
  cat "$OUT/engine_$run.log"
done

echo "gpu_train_check: done in $(( $(date +%s) - START )) s, status $status (logs in $OUT)"
exit $status
