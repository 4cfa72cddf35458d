#!/usr/bin/env bash
# The GPU figures of issue #13 in one prepared run, for a session lent a GPU (device tool):
#   bash benchmarks/gpu_session.sh [OUT_DIR]      (default: $OUT, else runs/gpu_session)
# Each configuration runs in its own process, so each row's device peak is its own. Needs the
# machine's JAX with its GPU backend (no download). About 8-10 minutes on an H100; rows after
# the budget (BUDGET_S, default 480 s) are skipped, so the figures that matter come first.
set -u
out="${1:-${OUT:-runs/gpu_session}}"
mkdir -p "$out"
budget="${BUDGET_S:-480}"
start=$(date +%s)
log="$out/gpu_session.md"
{
  echo "# GPU session $(date -u +%F' '%H:%M) UTC"
  nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader 2>/dev/null
  python -c "import jax; print('jax', jax.__version__, jax.devices())"
} > "$log" 2>&1
run() {  # run NAME CMD...: skipped once the budget is spent
  if (( $(date +%s) - start > budget )); then echo "skipped (budget): $1" >> "$log"; return; fi
  echo "## $1" >> "$log"
  shift
  timeout 300 "$@" >> "$log" 2> "$out/stderr_$(date +%s).txt" || echo "(exit $?)" >> "$log"
}
steps="python benchmarks/train_step.py --steps 5 --max_temp_gib 70"
big="${SIZE:-128}"      # SIZE=32 SMALL_SIZE=32 BUDGET_S=60: a quick dry run on a CPU
small="${SMALL_SIZE:-64}"
# The paper's step: 128^3, batch 4, one pass vs micro-batches of 1 (the scan form on GPUs).
run "cvaa_gan-cvaa 128^3 batch 4, one pass" $steps --models cvaa_gan-cvaa --sizes $big --batches 4
run "cvaa_gan-cvaa 128^3 batch 4, microbatch 1" $steps --models cvaa_gan-cvaa --sizes $big \
  --batches 4 --microbatches 1 --no_one_pass_flops
run "cvaa_gan-cvaa 128^3 batch 1" $steps --models cvaa_gan-cvaa --sizes $big --batches 1
run "DRR renderer" python benchmarks/drr.py --size "$big"
run "cvaa_gan-cvaa 128^3 batch 4, bf16" $steps --models cvaa_gan-cvaa --sizes $big --batches 4 \
  --variants model.dtype=bfloat16
run "all models at 64^3, batch 4" $steps --models cvaa_gan-add,cvaa_gan-cvaa,x2ct_gan,3dcnn \
  --sizes $small --batches 4
echo "total $(( $(date +%s) - start )) s" >> "$log"
cat "$log"
