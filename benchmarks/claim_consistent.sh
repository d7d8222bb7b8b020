#!/usr/bin/env bash
# The papers' claim at equal wall clock: the plain VAE against a selfVAE trained with its likelihood renormalised
# onto d(x) = y (model.consistent), each for MINUTES of training clock, side by side on one thread each, the
# learning rate annealed over the time budget (train.lr_schedule=cosine-time); each run's final evaluation gives
# the full-test-set ELBO and the IW bound on the first 100 test images (final/metrics.json); then FID, 1000 samples
# against the first 1000 test images (final/fid.json). Usage: benchmarks/claim_consistent.sh [DATA_DIR] [OUT_DIR] [MINUTES] [SELFVAE_PRESET] [VAE_PRESET]
# (Fashion-MNIST: benchmarks/claim_consistent.sh /usr/share/datasets/fashion-mnist runs/claim-fashion 60 \
#  fashion-mnist-srvae fashion-mnist-vae)
set -euo pipefail
DATA=${1:-../shared/data}
OUT=${2:-runs/claim}
MINUTES=${3:-60}
SELF=${4:-mnist-srvae}
VAE=${5:-mnist-vae}
mkdir -p "$OUT"
common=(--data-dir "$DATA" --steps 100000 --threads 1 --channels-last --no-progress
        --set train.lr_schedule=cosine-time --set train.max_minutes="$MINUTES" --set train.eval_every=500
        --set train.eval_limit=500 --set train.sample_every=100000 --set train.final_iw_limit=100)
selfvae train --preset "$VAE" --out "$OUT/vae" "${common[@]}" > "$OUT/vae.log" 2>&1 &
selfvae train --preset "$SELF" --out "$OUT/$SELF-cons" "${common[@]}" --set model.consistent=true \
  > "$OUT/$SELF-cons.log" 2>&1 &
wait
for r in vae "$SELF-cons"; do
  selfvae fid "$OUT/$r" --n 1000 --n-ref 1000 --ref test --no-progress
done
