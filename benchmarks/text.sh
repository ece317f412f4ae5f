#!/usr/bin/env bash
# Compact text vectors (benchmarks/results/text-bbc): BBC News sentences embedded offline
# with all-MiniLM-L6-v2 (384 x float32 = 1,536 B), coded by entropy-coded autoencoders at
# about 8 to 64 B per vector, against faiss SQ8/SQ4/PQ/OPQ and PCA + int8 at equal bytes.
# Needs: pip install torch==2.13.0 -e ".[cpu,train,text]"
# Embedding runs at 7-9 sentences/s on one thread of the busy 2-core VM (about 40 min for
# the 19,456 sentences used here; the cache in ~/.cache/latentwire/text resumes a cut run);
# the four models train side by side, one thread each (about 30 min); the evaluation,
# mostly faiss OPQ training, about 10 min.
set -euo pipefail
out=${OUT:-runs/text}
sentences=${SENTENCES:-19456}
mkdir -p "$out"
export OMP_NUM_THREADS=1

# 1,000 queries and 7,000 database vectors first; the rest (11,456) are training vectors
python -m latentwire.training.text --out "$out/bbc" --sentences "$sentences" --force

models=()
for lam in 0.0001 0.0003 0.0018 0.006; do
    latentwire train --force --threads 1 --data "$out/bbc/train.npy" --name "bbc-k128-$lam" \
        --latent-dim 128 --hidden 512 --codec entropy --rate-lambda "$lam" --normalize none \
        --epochs 40 --batch-size 128 --val-fraction 0.1 --no-progress \
        --out "$out/bbc-k128-$lam" --checkpoint "$out/bbc-k128-$lam.pt" &
    models+=(--model "$out/bbc-k128-$lam")
done
wait
latentwire evaluate --task retrieval "${models[@]}" --data "$out/bbc/vectors.npz" \
    --train-vectors "$out/bbc/train.npy" --budgets 8,16,32,64 --unit-vectors \
    --report benchmarks/results/text-bbc
