#!/usr/bin/env bash
# Rate-distortion reports quoted in the README (benchmarks/results/rd-digits, rd-image).
# Needs the training extra: pip install torch==2.13.0 -e ".[cpu,train]"
# Digits take a few minutes; the two photo models about 80 minutes on 2 CPU cores.
set -euo pipefail
out=${OUT:-runs/rd}
mkdir -p "$out"

# digits: one K=8 int8 model (its f32, f16 and int8 points) and two K=16 entropy models
latentwire train --force --data digits --latent-dim 8 --codec int8 \
    --out "$out/digits-k8-int8" --checkpoint "$out/k8.pt" --no-progress
for lam in 0.006 0.01; do
    latentwire train --force --data digits --latent-dim 16 --hidden 256,128 --codec entropy \
        --rate-lambda "$lam" --out "$out/digits-k16-entropy-$lam" \
        --checkpoint "$out/k16-$lam.pt" --no-progress
done
latentwire evaluate --model "$out/digits-k8-int8" \
    --model "$out/digits-k16-entropy-0.006" --model "$out/digits-k16-entropy-0.01" \
    --data digits --report benchmarks/results/rd-digits

# photos: GDN models trained on patches of seven photos that ship with scikit-learn,
# matplotlib and scikit-image (`--data photos`), tested on the whole flower.jpg, which is
# not among them. The two run side by side, one thread each (about 80 minutes). At
# --lr 1e-3 these GDN models can blow up; the trainer then goes back to its best weights
# and halves the learning rate (its log says when).
photo=(--data photos --channels 64,64,64,64 --activation gdn --latent-dim 96 --codec entropy)
latentwire train --force --threads 1 "${photo[@]}" --rate-lambda 0.01 --patch 128 \
    --batch-size 4 --lr 1e-3 --epochs 110 --patience 110 \
    --out "$out/photos-l010" --checkpoint "$out/photos-l010.pt" --no-progress &
first=$!
latentwire train --force --threads 1 "${photo[@]}" --rate-lambda 0.004 --patch 64 \
    --batch-size 8 --lr 1e-3 --epochs 80 --patience 80 \
    --out "$out/photos-l004" --checkpoint "$out/photos-l004.pt" --no-progress &
second=$!
wait "$first"
wait "$second"
latentwire evaluate --model "$out/photos-l010" --model "$out/photos-l004" \
    --data sample-images:flower --report benchmarks/results/rd-image
python benchmarks/flower_crops.py "$out/photos-l010" benchmarks/results/rd-image/flower-crops.png
