#!/usr/bin/env bash
# Train fer8's bundled default model with `fer8 train`, exactly as it was trained.
#
#   scripts/train_default.sh FERPLUS_DIR IMAGENET_WEIGHTS [RUN_DIR]
#
# FERPLUS_DIR holds FER2013Train/ and FER2013Valid/ (tar -xzf ferplus.tar.gz -C DIR);
# IMAGENET_WEIGHTS is resnet50_imagenet_notop.h5 (Keras's ImageNet ResNet50, no top).
# Run it again after an interruption: it resumes at the next epoch.
#
# Recipe (2-core CPU, no GPU; ~1 hour with bfloat16): 112 px input (FER2013 faces are
# 48 px, so 224 adds no detail and costs 4x), stages 1-2 frozen, FER+ vote
# distributions as soft targets, 3 epochs, AdamW 3e-4 with a short warm-up and cosine
# decay. Then the best epoch is packed compactly into src/fer8/models/default.fer8.
set -euo pipefail

data=${1:?usage: scripts/train_default.sh FERPLUS_DIR IMAGENET_WEIGHTS [RUN_DIR]}
weights=${2:?usage: scripts/train_default.sh FERPLUS_DIR IMAGENET_WEIGHTS [RUN_DIR]}
run=${3:-runs/default}

resume=()
if [[ -f "$run/checkpoint.keras" ]]; then
    resume=(--resume)
fi

fer8 train \
    --data "$data/FER2013Train" --val "$data/FER2013Valid" --out "$run" \
    --backbone resnet50 --backbone-weights "$weights" \
    --image-size 112 --freeze-stages 2 --soft-labels \
    --epochs 3 --batch-size 32 --learning-rate 3e-4 --warmup-epochs 0.3 \
    --patience 3 --seed 0 "${resume[@]}"

python "$(dirname "$0")/pack_model.py" "$run/model.fer8" src/fer8/models/default.fer8
