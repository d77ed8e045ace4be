"""Identity retrieval of probe folders on each half of the held-out characters (validation: recipe choices;
scored: the figure to report), as in docs/probes.md:

    python benchmarks/probe_halves.py --lake lake-small lake-small/_checkpoints/probes lake-small/_checkpoints/probes-cu

Each half's queries are its characters' images and its gallery their standard views, so top-1 is higher than
over all held-out characters (a gallery half as large).
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from serialgen.compositing.split import SCORED, VALIDATION, held_out_role  # noqa: E402
from serialgen.config import load_settings  # noqa: E402
from serialgen.probes import load_probes  # noqa: E402
from serialgen.probes.data import read_probe_images  # noqa: E402
from serialgen.probes.validation import identity_validation  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--lake", default="lake-small")
    parser.add_argument("folders", nargs="+", type=Path)
    args = parser.parse_args()
    torch.set_num_threads(2)
    settings = load_settings(profile="small", lake=args.lake)
    cfg = settings.probes
    held = read_probe_images(settings.open_lake(), (cfg.height, cfg.width), settings.composite.test_fraction).where("test")
    for role in (VALIDATION, SCORED):
        part = held.subset([i for i, c in enumerate(held.character_ids) if held_out_role(c) == role])
        for folder in args.folders:
            scores = identity_validation(load_probes(folder), part)["vs_standard"]
            print(json.dumps({"half": role, "probes": str(folder), "characters": len(set(part.character_ids)),
                              "top1": {k: v["top1"] for k, v in scores.items() if isinstance(v, dict)}}))


if __name__ == "__main__":
    main()
