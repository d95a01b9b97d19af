#!/usr/bin/env bash
# Train fer8's bundled default model with `fer8 train`.
#
#   scripts/train_default.sh DATA_DIR [RUN_DIR [MODEL_OUT]]
#
# DATA_DIR holds the extracted datasets of ../shared/data:
#   tar -xzf ferplus.tar.gz -C DATA_DIR   # FER2013Train/ FER2013Valid/
#   tar -xzf expw.tar.gz -C DATA_DIR      # expw/
#   tar -xzf sfew.tar.gz -C DATA_DIR      # sfew/Train/
#
# Recipe (two `fer8 train` runs at 112 px, 440 + 660 steps of 32 faces; 52 + 83 minutes
# on a shared 2-core CPU without AVX-512): start from the FER+-only model (85.5% on FER+
# Valid; taken from git history, commit 8364cd1, and checked by its SHA-256), then
# fine-tune on a mixture drawn per epoch from FER+ Train (a quarter of it), ExpW's
# training split and SFEW's (each face twice), so the web photos and film stills are
# not drowned by FER2013's 28,000 crops; FER+ vote distributions as soft targets;
# AdamW, a short warm-up and cosine decay from 1e-4.
#   stage 1: ResNet stages 1-2 frozen, ExpW faces 1.5 times, 2 epochs of 220 steps;
#   stage 2: from stage 1's model, only stage 1 frozen, ExpW faces 2.5 times, 3 epochs.
# The best epoch of each is chosen on the mean accuracy over FER+ Valid, ExpW@val and
# SFEW@val. Stage 2's weights are then averaged with the start's, 0.4 of the way from the
# start (scripts/interpolate_models.py, "WiSE-FT"), which gave back most of the FER+
# accuracy the fine-tuning cost while keeping most of its gains, and the result is packed
# compactly into MODEL_OUT (default src/fer8/models/default.fer8). JAFFE is kept out of
# training: it is the posed-photo test.
#
# Run it again after an interruption: a finished stage is skipped and a stage resumes at
# its next epoch. Training is seeded and deterministic on one kind of CPU
# (scripts/compare_weights.py compares runs). The work is one function, parsed whole
# before it runs, and the line that calls it also exits, so editing this file while a
# run is under way cannot derail that run.
set -euo pipefail

main() {
    local usage="usage: scripts/train_default.sh DATA_DIR [RUN_DIR [MODEL_OUT]]"
    local data=${1:?$usage}
    local run=${2:-runs/default}
    local model_out=${3:-src/fer8/models/default.fer8}
    local here
    here=$(cd "$(dirname "$0")" && pwd)

    mkdir -p "$run"
    local start="$run/start.fer8"
    if [[ ! -f "$start" ]]; then
        git -C "$here/.." show 8364cd1:src/fer8/models/default.fer8 > "$start.partial"
        echo "23036364bb7df833da74a50920a28496b381264e2ce75b629851d9f353593fac  $start.partial" \
            | sha256sum --check --quiet
        mv "$start.partial" "$start"
    fi
    local val=(--val "$data/FER2013Valid" --val "$data/expw@val" --val "$data/sfew/Train@val")
    local common=(--image-size 112 --soft-labels --batch-size 32 --steps-per-epoch 220
                  --learning-rate 1e-4 --patience 3 --keep-checkpoint)
    stage "$run/stage1" --data "$data/FER2013Train:0.25" --data "$data/expw@train:1.5" \
        --data "$data/sfew/Train@train:2" "${val[@]}" "${common[@]}" \
        --init-model "$start" --epochs 2 --freeze-stages 2 --warmup-epochs 0.1 --seed 0
    stage "$run/stage2" --data "$data/FER2013Train:0.25" --data "$data/expw@train:2.5" \
        --data "$data/sfew/Train@train:2" "${val[@]}" "${common[@]}" \
        --init-model "$run/stage1/model.fer8" --epochs 3 --freeze-stages 1 \
        --warmup-epochs 0.05 --seed 1
    python "$here/interpolate_models.py" "$start" "$run/stage2/model.fer8" \
        "$run/averaged.fer8" --alpha 0.4
    # pack_model.py also says whether the packed file is the one registered (bundled)
    python "$here/pack_model.py" "$run/averaged.fer8" "$model_out"
}

# One `fer8 train` run into OUT: skipped when finished, resumed when interrupted.
stage() {
    local out=$1
    shift
    if [[ -f "$out/model.fer8" && ! -f "$out/train.unfinished" ]]; then
        return
    fi
    local resume=()
    if [[ -f "$out/checkpoint.keras" ]]; then
        resume=(--resume)
    fi
    mkdir -p "$out"
    touch "$out/train.unfinished"
    fer8 train "$@" --out "$out" "${resume[@]}"
    rm "$out/train.unfinished"
}

main "$@"; exit
