#!/usr/bin/env bash
# Gilbert et al. 2021 (Generating synthetic labeled data from existing anatomical models): procedural heart
# anatomy -> pseudo-images (each class a grey level with texture) -> CycleGAN to the appearance of real
# echocardiograms -> a segmenter trained on synthetic images ONLY -> Dice on held-out real CAMUS patients.
# The CycleGAN learns from unpaired real CAMUS images of the train patients; the label maps of the
# synthetic set are synthgen's procedural apical views, so no real annotation reaches the segmenter.
# Work at SCALE=full: 5,000 CycleGAN steps at 128 x 128 (two generators, two discriminators), 4,000
# samples, then 2 arms x SEEDS segmenters of 1,000 steps each.
# Usage: examples/recipes/gilbert_cyclegan.sh   (DATA, OUT, SCALE, SEEDS: see common.sh)
source "$(dirname "$0")/common.sh"
OUT=${OUT:-runs/gilbert_cyclegan}
mkdir -p "$OUT"

[ -e "$OUT/camus.zarr" ] || run synthgen ingest "$DATA/camus" "$OUT/camus.zarr"
run synthgen train-gan "$OUT/camus.zarr" "$OUT/gan" $(resume "$OUT/gan") --arch cyclegan --split train \
    --image-size "$GAN_SIZE" --steps "$GAN_STEPS" --lr-decay-steps "$GAN_DECAY" "${PROGRESS[@]}" "${TOY_GAN[@]}"
run synthgen build-dataset --out "$OUT/synth.zarr" --n "$N" --generator "$OUT/gan/checkpoint" \
    --source procedural --view apical --image-size "$GAN_SIZE" "$GAN_SIZE" "${TOY_BUILD[@]}" "${QUIET[@]}"
run synthgen evaluate utility "$OUT/camus.zarr" "$OUT/utility" --synth "$OUT/synth.zarr" \
    --arms real,synthetic --seeds "$SEEDS" "${SEG[@]}" "${PROGRESS[@]}"
cp "$OUT/utility/utility.md" "$OUT/results.md"
echo "results: $OUT/results.md"
