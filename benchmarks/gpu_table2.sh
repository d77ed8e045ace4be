#!/usr/bin/env bash
# The paper's Table 2 at small scale on one GPU (not run yet: no GPU was lent to the sessions that wrote it).
# Same commands as on 2 CPU cores; training picks the GPU through accelerate, the ablation's standardizer and
# generation pipelines run on CUDA when it is visible. Usage: bash benchmarks/gpu_table2.sh [LAKE]
set -euo pipefail
LAKE=${1:-lake-small}
S=(serialgen --profile small --lake "$LAKE")
for stage in assets render composite train-probes train-preprocessors train-standardizer train-base; do
  /usr/bin/time -f "$stage %e s" "${S[@]}" "$stage"
done
/usr/bin/time -f "ablate-personalizer (validation half) %e s" "${S[@]}" ablate-personalizer --role validation
/usr/bin/time -f "ablate-personalizer %e s" "${S[@]}" ablate-personalizer
