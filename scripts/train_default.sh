#!/usr/bin/env bash
# Train fer8's bundled default model with `fer8 train`, exactly as it was trained.
#
#   scripts/train_default.sh FERPLUS_DIR IMAGENET_WEIGHTS [RUN_DIR]
#
# FERPLUS_DIR holds FER2013Train/ and FER2013Valid/ (tar -xzf ferplus.tar.gz -C DIR);
# IMAGENET_WEIGHTS is resnet50_imagenet_notop.h5 (Keras's ImageNet ResNet50, no top).
# Run it again after an interruption: each stage resumes at its next epoch, and a
# finished stage is not trained again.
#
# Recipe (2-core CPU, no GPU; about 2 h 40 min with bfloat16), three `fer8 train` runs at
# 112 px (FER2013 faces are 48 px, so 224 adds no detail and costs 4x), all on FER+
# vote distributions as soft targets, AdamW with a short warm-up and cosine decay:
#   1. RUN_DIR/stage1: from ImageNet, stages 1-2 frozen, 3 epochs at 3e-4 (~1 hour);
#   2. RUN_DIR/stage2: from stage 1's best epoch, nothing frozen, 4 epochs at 1e-4;
#   3. RUN_DIR/stage3: from stage 2's best epoch, one more epoch at 3e-5 (a warm restart
#      of the cosine schedule: stage 2 ended at 1e-6 while still improving).
# Then stage 3's best epoch is packed compactly into src/fer8/models/default.fer8.
set -euo pipefail

usage="usage: scripts/train_default.sh FERPLUS_DIR IMAGENET_WEIGHTS [RUN_DIR]"
data=${1:?$usage}
weights=${2:?$usage}
run=${3:-runs/default}

# fer8 train OUT ARGS...: a new run in OUT, or the run already there continued.
# ARGS come after the common flags, so a stage's own value of a flag wins.
train() {
    local out=$1
    shift
    local resume=()
    if [[ -f "$out/checkpoint.keras" ]]; then
        resume=(--resume)
    fi
    fer8 train --data "$data/FER2013Train" --val "$data/FER2013Valid" --out "$out" \
        --backbone resnet50 --image-size 112 --soft-labels --batch-size 32 \
        --warmup-epochs 0.3 --patience 3 --seed 0 "$@" "${resume[@]}"
}

train "$run/stage1" --backbone-weights "$weights" --freeze-stages 2 \
    --epochs 3 --learning-rate 3e-4
train "$run/stage2" --init-model "$run/stage1/model.fer8" --freeze-stages 0 \
    --epochs 4 --learning-rate 1e-4
train "$run/stage3" --init-model "$run/stage2/model.fer8" --freeze-stages 0 \
    --epochs 1 --learning-rate 3e-5 --warmup-epochs 0.1

python "$(dirname "$0")/pack_model.py" "$run/stage3/model.fer8" src/fer8/models/default.fer8
