#!/usr/bin/env bash
# Question: is the widest decoder that fits the 8 MB file (cifar10-vae-small: p(x|u) of width 128, growth 64,
# 4 steps; 3.58M parameters) the best learner per CPU-hour, or would a thinner one (faster steps) learn more in
# the same CPU time? (issue 33, point 1: widths picked by measured learning per CPU-hour)
# Answer (2026-11-25, 30 CPU-minutes each): not the widest. At 0.45 CPU-hours the 96-wide 3-step decoder
# validates at 4.8777 bits/dim, the 64-wide at 5.0320, the preset only reaches 5.0407 at 0.47 h (its steps cost
# 1.67 CPU-s against 1.36 and 1.30). Over 5 hours: not measured (docs/RESULTS.md).
#
# Each candidate trains MINUTES of CPU time on one thread (train.clock=cpu: other work sharing the cores costs it
# nothing), validated every 100 steps on the same 1000 images as experiments/cpu_budget.sh's runs, whose first
# MINUTES are the widest candidate's curve. Then:
#   python tools/time_to_quality.py runs/cpu5h-vae runs/width-py64 runs/width-py96 --clock cpu
set -euo pipefail
DATA=${1:-../shared/data}
MINUTES=${2:-30}
common=(--preset cifar10-vae-small --data-dir "$DATA" --threads 1 --channels-last --no-progress --steps 1000000
        --set train.clock=cpu --set train.max_minutes="$MINUTES" --set train.eval_every=100
        --set train.eval_limit=1000 --set train.sample_every=100000 --set train.final_iw_limit=0
        --set train.final_eval_limit=1000)
OMP_NUM_THREADS=1 selfvae train --out runs/width-py64 "${common[@]}" --set model.p_y.width=64 \
  --set model.p_y.growth=32 > runs/width-py64.log 2>&1     # 2.69M parameters
OMP_NUM_THREADS=1 selfvae train --out runs/width-py96 "${common[@]}" --set model.p_y.width=96 \
  --set model.p_y.growth=48 --set model.p_y.steps=3 > runs/width-py96.log 2>&1   # 2.89M parameters
