#!/usr/bin/env bash
# Denoising reports quoted in the README (benchmarks/results/denoise-digits, denoise-flower).
# Needs the training extra: pip install torch==2.13.0 -e ".[cpu,train]" (and PyWavelets for
# the wavelet baseline). Digits take a few minutes on one core; the photo denoiser's six
# epochs about 20 CPU minutes (one thread), far longer on a busy machine.
set -euo pipefail
out=${OUT:-runs/denoise}
mkdir -p "$out"
export OMP_NUM_THREADS=1
sigmas=gaussian:0.1,0.3,0.5

# digits: one blind denoiser for every sigma (sigma ~ U(0, 0.6), clipped to [0, 1]) and a
# linear one (no hidden layers) trained at low noise, the only one above the noisy input at
# sigma 0.1 (the blind one's clean ceiling is below it: the report warns)
latentwire train --force --threads 1 --no-progress --data digits --codec f32 \
    --hidden 256,128 --latent-dim 64 --noise gaussian:0..0.6 \
    --out "$out/digits-dae" --checkpoint "$out/digits-dae.pt"
latentwire train --force --threads 1 --no-progress --data digits --codec f32 \
    --hidden none --latent-dim 64 --noise gaussian:0..0.2 --epochs 150 \
    --out "$out/digits-linear" --checkpoint "$out/digits-linear.pt"
latentwire evaluate --model "$out/digits-dae" --model "$out/digits-linear" \
    --data digits --noise "$sigmas" \
    --report benchmarks/results/denoise-digits

# photos: a small blind conv denoiser (stride 4, 48 latent channels, f32 codes) on 32x32
# patches of the seven training photos, tested on the whole held-out flower.jpg
latentwire train --force --threads 1 --no-progress --data photos --patch 32 --model conv \
    --channels 48,64 --latent-dim 48 --codec f32 --noise gaussian:0..0.6 \
    --epochs 6 --patience 3 --batch-size 32 \
    --out "$out/photos-dae" --checkpoint "$out/photos-dae.pt"
latentwire evaluate --model "$out/photos-dae" --data sample-images:flower --noise "$sigmas" \
    --tune-on 4 --report benchmarks/results/denoise-flower
# the same with unclipped noise (zero-mean Gaussian, the classic denoisers' own model)
latentwire evaluate --model "$out/photos-dae" --data sample-images:flower --noise "$sigmas" \
    --no-clip --tune-on 4 --report benchmarks/results/denoise-flower-noclip
