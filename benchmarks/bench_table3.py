"""The paper's Table 3 at small scale: four FBDM/RPIM variants vs three baselines on held-out characters.

    python benchmarks/bench_table3.py --lake lake-small [--steps 6000] [--eval-pairs 64] [--variant FBDM+RPIM] [--threads 1]

Needs a lake with `pairs` made with the `small` profile (``serialgen --profile small --lake lake-small
assets|render|composite``). Trains each variant with the same budget (resuming per variant), scores it
and the baselines, records `runs`/`evaluations` rows, and writes the table and the grid to docs/ (with
``--docs``). The same as ``serialgen --profile small ablate-standardizer`` without Prefect.
"""

from __future__ import annotations

import argparse
import shutil
import time
from pathlib import Path

from serialgen.config import load_settings
from serialgen.stages.ablate_standardizer import machine, run_ablate_standardizer
from serialgen.stages.train_standardizer import with_overrides

DOCS = Path(__file__).resolve().parent.parent / "docs"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--lake", required=True)
    parser.add_argument("--profile", default="small")
    parser.add_argument("--config")
    parser.add_argument("--steps", type=int, help="training steps of every variant (default: the profile's)")
    parser.add_argument("--eval-pairs", type=int, default=64)
    parser.add_argument("--variant", action="append", help="only this variant (repeatable)")
    parser.add_argument("--docs", action="store_true", help="write the table and grid to docs/")
    parser.add_argument("--threads", type=int, help="torch threads (e.g. 1 per process when variants train side by side)")
    args = parser.parse_args()
    if args.threads:
        import torch

        torch.set_num_threads(args.threads)
    settings = with_overrides(load_settings(args.config, args.profile, lake=args.lake), steps=args.steps)
    started = time.perf_counter()
    report = run_ablate_standardizer(settings, args.eval_pairs, args.variant)
    wall = time.perf_counter() - started
    cfg = settings.standardizer
    lines = [report.table.read_text().strip(), "",
             f"{report.train_pairs} train pairs / {report.test_pairs} held-out pairs ({report.ablation.rows[0].n} "
             f"scored); {cfg.height}x{cfg.width}, {cfg.steps} steps x batch {cfg.batch_size} per variant, DDIM "
             f"{cfg.inference_steps} steps, guidance {cfg.guidance_scale}; run {report.run_id}",
             f"machine: {machine()}; wall {wall:.0f} s (evaluation {report.ablation.eval_seconds:.0f} s); "
             "training wall in this invocation (0 when resumed from a finished run): " + ", ".join(
                 f"{r.method} {r.train_seconds:.0f} s" for r in report.ablation.rows if r.train_seconds is not None)]
    print("\n".join(lines))
    if args.docs:
        (DOCS / "standardizer_table3.md").write_text("\n".join(lines) + "\n")
        shutil.copy(report.grid, DOCS / "standardizer_table3_grid.png")
        print(f"wrote {DOCS / 'standardizer_table3.md'} and {DOCS / 'standardizer_table3_grid.png'}")


if __name__ == "__main__":
    main()
