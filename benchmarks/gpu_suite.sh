#!/usr/bin/env bash
# The speed issue's GPU measurements, in parts that each fit one device call (< 10 minutes).
# Prepare here first (benchmarks/gpu_prepare.sh), then one device run:
#   carry [".whl", ".ref"], command `bash benchmarks/gpu_suite.sh all`, timeout 540
# `all` runs the parts below in the order of the rows they settle (reference, autocast, full,
# sweep, sweep_xla, then profile where time is left), trimmed to fit a session's 15 device
# minutes: no eval rows, the full run on 100 files per class and 3 epochs, the sweep at
# 128,256, sweep_xla at 128 (SWEEP_XLA); each part gets what is left of BUDGET_S (default
# 450 s; PARTS picks others), and a part that overruns is stopped, not the rest.
# Each JSON lands in $OUT as its part ends, so a cut-off call still returns those before.
# Parts (results land in $OUT, then go to benchmarks/results/):
#   sweep      ours, bf16: train samples/s and MFU for batches $SWEEP, eval at 256 and 1
#   sweep_xla  the same with conv_algorithm=xla (the 1-D convolutions as XLA convolutions, cuDNN
#              on a GPU) instead of the shifted-copy matmuls made for XLA:CPU: which the GPU
#              configs should use; rows are written as they end
#   reference  ours bf16 vs the reference as it trains (float32, main.py's cuDNN settings),
#              with a logits check first (ours on the reference's weights, on the GPU)
#   autocast   ours bf16 vs the reference under autocast bf16 + channels_last_3d + autotuned cuDNN
#   full       a full NTU Mutual 26 x-sub training projected from the real loop (bf16)
#   profile    where the bf16 train step's time goes on the GPU, kernel by kernel, by kind and
#              layer (benchmarks/profile_step.py), for conv_algorithm xla and matmul
#              ($PROFILE_ALGORITHMS) at batch $PROFILE_BATCH (128): to set beside the
#              deviceless projection (benchmarks/gpu_compile.py) of the same step
# Environment: BATCH (train batch of the side by side runs, default 64), SWEEP (default
# 32,64,128,256), EVAL (eval batches of the sweep, default 256,1), FULL_BATCH (the full run's
# batch, default 32: the reference's recipe), STEPS; for a smoke run on a CPU: MODEL (default
# ntu26), PEAK (TFLOP/s, default auto), CONFIG (configs/ntu26.py:xsub), NUM_PER_CLASS (300), EPOCHS (4),
# REFERENCE_DIR (.ref/ISTA-Net), FULL_SET (one more key=value for the full run's config),
# REF_EVAL (eval batches of the side by side runs, default BATCH,1), BUDGET_S, PARTS (`all`).
# CONV_ALGORITHM=xla: the sweep with the 1-D convolutions' gradients by autodiff (cuDNN) instead
# of the shifted-copy matmuls made for XLA:CPU (then FULL_SET=conv_algorithm=xla for the full
# run). bf16 compute, which every part uses, takes 'matmul' where 'winograd' is asked for, and
# bf16 products on a GPU (matmul_outputs 'auto'; MATMUL_OUTPUTS=float32 sweeps the float32 ones
# for comparison; benchmarks/gpu_compile.py projects both).
# A persistent compilation cache in /tmp/jax_cache serves later parts while the machine is warm
# (each JSON's environment counts its cache hits: a hit's compile_s is a load); `full` runs
# without it, its compilation being part of the training it projects.
set -euo pipefail
cd "$(dirname "$0")/.."
part=${1:?usage: gpu_suite.sh all|reference|autocast|full|sweep|sweep_xla|profile}
out=${OUT:-/tmp/gpu_suite_out}
mkdir -p "$out"
# The device image lacks these; where they are installed (a CPU smoke run) the wheels are not used.
if ! python3 -c 'import grain, tensorflow_datasets, ml_collections, tensorboardX' 2>/dev/null; then
  python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade \
    --target /tmp/site .whl/*.whl
  export PYTHONPATH=/tmp/site:${PYTHONPATH:-}
fi
export PYTHONUNBUFFERED=1
export JAX_COMPILATION_CACHE_DIR=/tmp/jax_cache JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS=0
ref=${REFERENCE_DIR:-.ref/ISTA-Net}
batch=${BATCH:-64}
steps=${STEPS:-10}
model=${MODEL:-ntu26}
peak=${PEAK:-auto}
log="$out/$part.log"
{
  nvidia-smi --query-gpu=name,memory.total,clocks.sm,clocks.max.sm --format=csv || true
  case "$part" in
    sweep|sweep_xla)
      algorithm=${CONV_ALGORITHM:-matmul}
      [[ $part == sweep_xla ]] && algorithm=xla
      python3 -m benchmarks.throughput --model "$model" --dtype bfloat16 \
        --batch "${SWEEP:-32,64,128,256}" --eval_batches "${EVAL-256,1}" --steps "$steps" --warmup 2 \
        --conv_algorithm "$algorithm" --matmul_outputs "${MATMUL_OUTPUTS:-auto}" \
        --peak_tflops "$peak" --out "$out/gpu_${model}_bf16_sweep_${algorithm}.json" ;;
    reference)
      python3 -m benchmarks.compare_reference --reference_dir "$ref" --model "$model" \
        --batch "$batch" --eval_batches "${REF_EVAL-$batch,1}" --steps "$steps" --warmup 2 \
        --dtype bfloat16 --check_logits --peak_tflops "$peak" \
        --out "$out/gpu_${model}_bf16_vs_reference.json" ;;
    autocast)
      python3 -m benchmarks.compare_reference --reference_dir "$ref" --model "$model" \
        --batch "$batch" --eval_batches "${REF_EVAL-$batch,1}" --steps "$steps" --warmup 2 \
        --dtype bfloat16 --reference_autocast --reference_channels_last \
        --reference_cudnn benchmark --peak_tflops "$peak" \
        --out "$out/gpu_${model}_bf16_vs_reference_autocast.json" ;;
    profile)
      for algorithm in ${PROFILE_ALGORITHMS:-xla matmul}; do
        # One algorithm's failure (e.g. no CUPTI) leaves the next one its turn.
        python3 -m benchmarks.profile_step --model "$model" --kind train \
          --batch "${PROFILE_BATCH:-128}" --dtype bfloat16 --conv_algorithm "$algorithm" \
          --matmul_outputs "${MATMUL_OUTPUTS:-auto}" \
          --out "$out/gpu_${model}_profile_train_b${PROFILE_BATCH:-128}_${algorithm}.json" \
          || echo "profile $algorithm failed (exit $?)"
      done ;;
    full)
      rm -rf /tmp/full_training
      JAX_COMPILATION_CACHE_DIR= python3 -m benchmarks.full_training \
        --config "${CONFIG:-configs/ntu26.py:xsub}" \
        --epochs "${EPOCHS:-4}" --num_per_class "${NUM_PER_CLASS:-300}" \
        --config.dtype=bfloat16 "--config.batch_size=${FULL_BATCH:-32}" \
        ${FULL_SET:+"--config.$FULL_SET"} \
        --workdir /tmp/full_training \
        --out "$out/gpu_${model}_full_training.json" ;;
    all)
      budget=${BUDGET_S:-450}
      for p in ${PARTS:-reference autocast full sweep sweep_xla profile}; do
        left=$((budget - SECONDS))
        if ((left < 60)); then
          echo "== all: $p skipped, ${left} s of BUDGET_S=$budget left"; continue
        fi
        echo "== all: $p (${left} s left)"
        sweep=${SWEEP:-128,256}
        [[ $p == sweep_xla ]] && sweep=${SWEEP_XLA:-128}
        REF_EVAL=${REF_EVAL-} NUM_PER_CLASS=${NUM_PER_CLASS:-100} EPOCHS=${EPOCHS:-3} \
          SWEEP=$sweep EVAL=${EVAL-} \
          timeout --kill-after=10 "$left" bash "$0" "$p" > /dev/null \
          || { echo "== all: $p stopped (exit $?)"; tail -n 15 "$out/$p.log" 2>/dev/null || true; }
      done ;;
    *)
      echo "unknown part $part" >&2; exit 2 ;;
  esac
} 2>&1 | tee "$log"
# The last lines of a device reply: the figures that matter.
python3 - "$out" "$part" <<'EOF'
import json, pathlib, sys
out, part = pathlib.Path(sys.argv[1]), sys.argv[2]
for path in sorted(out.glob('*.json')):
  try:
    report = json.loads(path.read_text())
  except ValueError as e:  # a part stopped while writing
    print('==', path.name, 'unreadable:', e)
    continue
  print('==', path.name)
  for row in report.get('comparison', []):
    print(f"{row['kind']:5s} b{row['batch']:<4d} ours {row['jax_step_s']*1e3:8.2f} ms  "
          f"ref {row['torch_step_s']*1e3:8.2f} ms  x{row['throughput_ratio']:.2f}  "
          f"mfu {row.get('jax_mfu', 0):.3f}/{row.get('torch_mfu', 0):.3f}")
  for row in report.get('results', []) if 'comparison' not in report else []:
    if 'error' in row:
      print(f"{row['kind']:5s} b{row['batch']:<4d} {row['error'][:100]}")
      continue
    print(f"{row['kind']:5s} b{row['batch']:<4d} {row['median_step_s']*1e3:8.2f} ms  "
          f"{row['samples_per_s']:9.1f}/s  mfu {row.get('mfu', 0):.3f}  "
          f"first {row['first_step_incl_compile_s']:.1f} s")
  trains = [r for r in report.get('results', []) if r['kind'] == 'train' and 'matmul_ops' in r]
  if trains:  # which library calls, in which dtypes, the train step's matmuls became
    print('train matmuls:', '; '.join(f'{n} x {k}' for k, n in
                                      list(trains[0]['matmul_ops'].items())[:6]))
  if 'by_category' in report:  # profile_step: measured time by kind and layer
    print(f"{report['kind']} b{report['batch']} {report['conv_algorithm']}: span "
          f"{report['ops_span_s']*1e3:.2f} ms, idle {report['idle_s']*1e3:.2f} ms; " + ', '.join(
              f"{k} {v['share']:.0%}" for k, v in list(report['by_category'].items())[:5]))
    print('  ' + ', '.join(f"{k} {v['seconds']*1e3:.2f} ms"
                          for k, v in list(report['by_layer'].items())[:6]))
    vs = report.get('vs_projection')
    if vs and 'error' in vs:
      print('  vs projection:', vs['error'][:150])
    elif vs:  # measured beside gpu_compile's roofline of the same step
      print(f"  vs {vs['projection']}: kernels {vs['measured_ops_s']*1e3:.1f} ms, roofline "
            f"{vs['roofline_s']*1e3:.1f} ms (x{vs['measured_over_roofline']}); " + ', '.join(
                f"{k} x{v['ratio']}" for k, v in list(vs['by_layer'].items())[:6]))
  if report.get('logits_check'):
    print('logits', report['logits_check'])
  if 'projection' in report:
    p = report['projection']
    print(f"projected {p['projected_total_min']:.1f} min: train {p['train_samples_per_s']:.0f}/s "
          f"eval {p['eval_samples_per_s']:.0f}/s rest {p['rest_of_epoch_s']:.2f} s/epoch "
          f"recompilations {report['compilations_after_first_epoch']} "
          f"train step compiled {report.get('train_step_compilations')}x")
EOF
