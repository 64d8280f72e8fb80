# Sourced by the four recipe scripts: where the data and the results go, and the two budgets.
#   DATA   the folder holding camus/ and acdc/ in their published layouts [default: ../shared/data]
#   OUT    where stores, checkpoints and tables go [default: runs/<recipe>]
#   SCALE  full (the published-size run, CPU hours) or toy (a smoke run of every step, about a minute)
#   SEEDS  segmenter seeds per arm [default: 3 at full scale, 1 at toy scale]
set -euo pipefail
DATA=${DATA:-../shared/data}
SCALE=${SCALE:-full}
case "$SCALE" in
    full)
        GAN_STEPS=${GAN_STEPS:-5000}; GAN_DECAY=2000; GAN_SIZE=128
        SHAPE_STEPS=2000; SHAPE_SIZE=64
        N=${N:-4000}; SEG_STEPS=${SEG_STEPS:-1000}; SEEDS=${SEEDS:-3}
        REALISM_LIMIT=(); QUIET=(); PROGRESS=(); TOY_GAN=(); TOY_DEPTH=(); TOY_SHAPE=(); TOY_BUILD=()
        ;;
    toy)
        GAN_STEPS=2; GAN_DECAY=1; GAN_SIZE=32
        SHAPE_STEPS=2; SHAPE_SIZE=32
        N=32; SEG_STEPS=2; SEEDS=${SEEDS:-1}
        REALISM_LIMIT=(--limit 16 --kid-subset-size 8); QUIET=(--quiet); PROGRESS=(--no-progress)
        # tiny networks, given last so that they override the recipe's; no gate for untrained shape models
        TOY_GAN=(--width 4 --batch-size 2); TOY_DEPTH=(--max-width 8 --depth 3); TOY_SHAPE=(--width 4 --depth 2)
        TOY_BUILD=(--no-gate --shard-size 16)
        ;;
    *)
        echo "SCALE must be full or toy, got '$SCALE'" >&2
        exit 2
        ;;
esac
# the segmenter budget of every arm (bench/results/utility.md): U-Net width 16 at 64 x 64, batch 16
SEG=(--steps "$SEG_STEPS" --val-every "$((SEG_STEPS < 100 ? SEG_STEPS : 100))")
if [ "$SCALE" = toy ]; then SEG+=(--width 4 --depth 2 --batch-size 2 --image-size 32 32); fi

# a trainer's flags to continue OUT_DIR where an earlier run of the script stopped
resume() {
    if [ -e "$1/checkpoint" ]; then echo --resume; fi
}

# say each command before running it, so that the log is the recipe
run() {
    echo "+ $*" >&2
    "$@"
}
