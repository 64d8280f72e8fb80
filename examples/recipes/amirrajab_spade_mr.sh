#!/usr/bin/env bash
# Amirrajab et al.: SPADE on cardiac short-axis MR (ACDC), fed with the real label maps of the train
# patients under elastic and affine deformation, a random style vector per image (style control); the
# real-data reduction experiment (10 / 25 / 100% of the real patients, each with and without the
# synthetic images; segmenters score held-out ACDC patients) and the FID/KID of the synthetic images in
# a real-only segmenter's feature space.
# Work at SCALE=full: 5,000 SPADE steps at 128 x 128, 4,000 samples, then 6 arms x SEEDS segmenters of
# 1,000 steps each, and one real-only segmenter for FID/KID.
# Usage: examples/recipes/amirrajab_spade_mr.sh   (DATA, OUT, SCALE, SEEDS: see common.sh)
source "$(dirname "$0")/common.sh"
OUT=${OUT:-runs/amirrajab_spade_mr}
mkdir -p "$OUT"

# ACDC slices are 256 x 216 and the like: brought to one square size at ingest. Test patients: number
# % 10 == 1 (a tenth of ACDC; the shared copy keeps the patients % 10 == 0 aside, so the default rule
# would hold out none of it), recorded in the store for every later split.
[ -e "$OUT/acdc.zarr" ] || run synthgen ingest "$DATA/acdc" "$OUT/acdc.zarr" --size "$GAN_SIZE" "$GAN_SIZE" \
    --test-remainder 1
run synthgen train-gan "$OUT/acdc.zarr" "$OUT/gan" $(resume "$OUT/gan") --arch spade --style-encoder \
    --split train --image-size "$GAN_SIZE" --steps "$GAN_STEPS" --lr-decay-steps "$GAN_DECAY" \
    "${PROGRESS[@]}" "${TOY_GAN[@]}" "${TOY_DEPTH[@]}"
run synthgen build-dataset --out "$OUT/synth.zarr" --n "$N" --preset sa-mr --generator "$OUT/gan/checkpoint" \
    --source store --source-url "$OUT/acdc.zarr" --source-split train --deform \
    --image-size "$GAN_SIZE" "$GAN_SIZE" "${TOY_BUILD[@]}" "${QUIET[@]}"
run synthgen evaluate utility "$OUT/acdc.zarr" "$OUT/utility" --synth "$OUT/synth.zarr" \
    --arms real,real+synthetic,real10,real10+synthetic,real25,real25+synthetic --seeds "$SEEDS" \
    "${SEG[@]}" "${PROGRESS[@]}"
# realism in the feature space of a segmenter trained on real train patients only (never on synth.zarr)
[ -e "$OUT/seg-real/best" ] || run synthgen train-seg "$OUT/acdc.zarr" "$OUT/seg-real" "${SEG[@]}" "${PROGRESS[@]}"
run synthgen evaluate realism "$OUT/synth.zarr" "$OUT/acdc.zarr" --segmenter "$OUT/seg-real/best" \
    --out "$OUT/realism" "${REALISM_LIMIT[@]}"
{ cat "$OUT/utility/utility.md"; echo; echo "## Realism"; echo; echo '```'; cat "$OUT/realism/realism.json"; echo '```'; } \
    > "$OUT/results.md"
echo "results: $OUT/results.md"
