#!/usr/bin/env bash
# The small-profile standardizer recipes across training seeds on one GPU (not run yet: no GPU was lent to the
# session that wrote it). Each run is benchmarks/standardizer_recipe.py as on 2 CPU cores (training picks the GPU
# through accelerate, standardizing runs on CUDA when visible), scored on the validation half only; score a chosen
# recipe on the scored half afterwards with --role scored (the folders are reused, not retrained).
# Usage: bash benchmarks/gpu_standardizer_seeds.sh [LAKE] [SEEDS]     e.g. lake-small "0 1 2 3 4"
set -euo pipefail
LAKE=${1:-lake-small}
SEEDS=${2:-"0 1 2 3 4"}
declare -A RECIPES=(
  [plain]=""
  [colour-0.5]="SERIALGEN_STANDARDIZER__COLOUR_AUGMENT=0.5"
  [colour-0.5-positions]="SERIALGEN_STANDARDIZER__COLOUR_AUGMENT=0.5 SERIALGEN_STANDARDIZER__TOKEN_POSITIONS=true"
  [colour-0.5-encoder]="SERIALGEN_STANDARDIZER__COLOUR_AUGMENT=0.5 SERIALGEN_STANDARDIZER__TRAIN_IMAGE_ENCODER=true"
  [colour-0.5-encoder-colours]="SERIALGEN_STANDARDIZER__COLOUR_AUGMENT=0.5 SERIALGEN_STANDARDIZER__TRAIN_IMAGE_ENCODER=true SERIALGEN_STANDARDIZER__COLOUR_EMBEDDING=1.0"
)
for seed in $SEEDS; do
  for name in "${!RECIPES[@]}"; do
    out="$LAKE/_checkpoints/recipes/gpu-$name-seed$seed"
    env ${RECIPES[$name]} SERIALGEN_STANDARDIZER__SEED="$seed" \
      python benchmarks/standardizer_recipe.py --lake "$LAKE" --out "$out" --role validation --copy
  done
done
