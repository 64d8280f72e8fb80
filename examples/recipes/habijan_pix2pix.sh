#!/usr/bin/env bash
# Habijan et al.: pix2pix (U-Net generator, PatchGAN, L1 + adversarial) translating CAMUS label maps into
# echocardiograms, used to enlarge the training set of a U-Net segmenter; Dice with and without the
# synthetic images on held-out real patients. This is the recipe of synthgen's bundled generator.
# Work at SCALE=full: 5,000 GAN steps at 128 x 128 (the bundled generator took about 27 CPU-minutes for
# them), 4,000 samples, then 3 arms x SEEDS segmenters of 1,000 steps each.
# Usage: examples/recipes/habijan_pix2pix.sh   (DATA, OUT, SCALE, SEEDS: see common.sh)
source "$(dirname "$0")/common.sh"
OUT=${OUT:-runs/habijan_pix2pix}
mkdir -p "$OUT"

[ -e "$OUT/camus.zarr" ] || run synthgen ingest "$DATA/camus" "$OUT/camus.zarr"
run synthgen train-gan "$OUT/camus.zarr" "$OUT/gan" $(resume "$OUT/gan") --arch pix2pix --width 16 --max-width 128 \
    --split train --image-size "$GAN_SIZE" --steps "$GAN_STEPS" --lr-decay-steps "$GAN_DECAY" "${PROGRESS[@]}" "${TOY_GAN[@]}" "${TOY_DEPTH[@]}"
run synthgen build-dataset --out "$OUT/synth.zarr" --n "$N" --generator "$OUT/gan/checkpoint" \
    --image-size "$GAN_SIZE" "$GAN_SIZE" "${TOY_BUILD[@]}" "${QUIET[@]}"
run synthgen evaluate utility "$OUT/camus.zarr" "$OUT/utility" --synth "$OUT/synth.zarr" \
    --arms real,synthetic,real+synthetic --seeds "$SEEDS" "${SEG[@]}" "${PROGRESS[@]}"
cp "$OUT/utility/utility.md" "$OUT/results.md"
echo "results: $OUT/results.md"
