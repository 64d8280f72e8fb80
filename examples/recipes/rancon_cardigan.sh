#!/usr/bin/env bash
# Rançon et al. (cardiGAN): a SPADE generator trained on CAMUS, new label maps from a shape VAE trained
# on the CAMUS train patients' annotations, synthetic images added to the real training set; Dice, HD95
# and ASSD per class on held-out real patients. They report that the augmentation LOWERED endocardial
# (LV cavity) Dice from 0.937 to 0.919: results.md says where synthgen lands on the same question.
# Work at SCALE=full: 5,000 SPADE steps at 128 x 128, 2,000 shape-VAE steps, 4,000 samples, then 2 arms x
# SEEDS segmenters of 1,000 steps each.
# Usage: examples/recipes/rancon_cardigan.sh   (DATA, OUT, SCALE, SEEDS: see common.sh)
source "$(dirname "$0")/common.sh"
OUT=${OUT:-runs/rancon_cardigan}
mkdir -p "$OUT"

[ -e "$OUT/camus.zarr" ] || run synthgen ingest "$DATA/camus" "$OUT/camus.zarr"
run synthgen train-gan "$OUT/camus.zarr" "$OUT/gan" $(resume "$OUT/gan") --arch spade --split train \
    --image-size "$GAN_SIZE" --steps "$GAN_STEPS" --lr-decay-steps "$GAN_DECAY" "${PROGRESS[@]}" "${TOY_GAN[@]}" "${TOY_DEPTH[@]}"
run synthgen train-shape "$OUT/camus.zarr" "$OUT/shape" $(resume "$OUT/shape") --split train \
    --image-size "$SHAPE_SIZE" --steps "$SHAPE_STEPS" "${PROGRESS[@]}" "${TOY_SHAPE[@]}"
run synthgen build-dataset --out "$OUT/synth.zarr" --n "$N" --generator "$OUT/gan/checkpoint" \
    --source vae --source-url "$OUT/shape/checkpoint" --image-size "$GAN_SIZE" "$GAN_SIZE" \
    "${TOY_BUILD[@]}" "${QUIET[@]}"
run synthgen evaluate utility "$OUT/camus.zarr" "$OUT/utility" --synth "$OUT/synth.zarr" \
    --arms real,real+synthetic --seeds "$SEEDS" "${SEG[@]}" "${PROGRESS[@]}"
cp "$OUT/utility/utility.md" "$OUT/results.md"
echo "results: $OUT/results.md"
