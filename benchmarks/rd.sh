#!/usr/bin/env bash
# Rate-distortion reports quoted in the README (benchmarks/results/rd-digits, rd-image).
# Needs the training extra: pip install torch==2.13.0 -e ".[cpu,train]"
set -euo pipefail
out=${OUT:-runs/rd}
mkdir -p "$out"

# digits: one K=8 model (its f32, f16 and int8 points) and one K=16 entropy model
latentwire train --data digits --latent-dim 8 --codec int8 \
    --out "$out/digits-k8-int8" --checkpoint "$out/k8.pt" --no-progress
latentwire train --data digits --latent-dim 16 --codec entropy --rate-lambda 0.003 \
    --out "$out/digits-k16-entropy" --checkpoint "$out/k16.pt" --no-progress
latentwire evaluate --model "$out/digits-k8-int8" --model "$out/digits-k16-entropy" \
    --data digits --report benchmarks/results/rd-digits

# photos: train on 32x32 patches of china.jpg, test on the whole flower.jpg (never seen)
# (the committed report's model stopped at epoch 95 of this run: about 20 CPU-minutes)
latentwire train --data sample-images:china --patch 32 --latent-dim 32 --codec entropy \
    --rate-lambda 0.001 --epochs 150 --patience 20 \
    --out "$out/china-entropy" --checkpoint "$out/china.pt" --no-progress
latentwire evaluate --model "$out/china-entropy" --data sample-images:flower \
    --report benchmarks/results/rd-image
