"""Personalizer benchmark (tiny profile, CPU): does the adapter learn, how fast does it train, and how
much of a step is spent waiting for data.

    python benchmarks/bench_personalizer.py [--characters 16] [--steps 200] [--workers 0 1]

1. Learning: a two_stage adapter is trained on drawn characters (standardized reference -> real
   target); on the held-out characters (test split) the denoising loss of the trained adapter is
   compared, on the same noise and timesteps, with the same SDXL with the adapter off (scale 0), with
   the untrained adapter, and with the trained adapter fed another character's reference.
2. Speed: training samples/s and the loader's share of step time, in-process loading vs spawned workers.

The base is the random tiny SDXL set: this measures the training machinery (does a reference-independent
correction get learned, how fast, how much loader wait). Whether an adapter transfers a character is measured
on the base model the pipeline trains: ``serialgen --profile small ablate-personalizer`` (docs/personalizer_table2.md).
The SDXL-sized GPU measurement is benchmarks/gpu_personalizer.py.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from serialgen.checkpoints import sdxl_folders  # noqa: E402
from serialgen.config import load_settings  # noqa: E402
from serialgen.models.ip_adapter import reference_processor  # noqa: E402
from serialgen.models.sdxl import load_sdxl_parts, write_sdxl_folders  # noqa: E402
from serialgen.stages.train_personalizer import run_train_personalizer, with_overrides  # noqa: E402
from serialgen.training.personalizer import Personalizer, heldout_loss  # noqa: E402
from serialgen.training.personalizer_data import PersonalizerPairs  # noqa: E402
from tests.personalizer_data import make_real_and_standardized  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--characters", type=int, default=16, help="train characters (plus a quarter held out)")
    parser.add_argument("--steps", type=int, default=200)
    parser.add_argument("--speed-steps", type=int, default=30)
    parser.add_argument("--workers", type=int, nargs="+", default=[0, 1])
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--lr", type=float, default=1e-3)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    root = Path(tempfile.mkdtemp(prefix="bench-personalizer-"))
    model_dir, encoder_dir = write_sdxl_folders(root / "tiny-sdxl")  # random: a speed subject, not a trained base
    base = load_settings(lake=str(root / "lake"), personalizer={"model_dir": str(model_dir),
                                                                "image_encoder_dir": str(encoder_dir)})
    test = max(2, args.characters // 4)
    make_real_and_standardized(base.open_lake(), train=args.characters, test=test)
    out: dict = {"characters": {"train": args.characters, "test": test}}

    settings = with_overrides(base, "two_stage", args.steps)
    settings = settings.model_copy(update={"personalizer": settings.personalizer.model_copy(
        update={"learning_rate": args.lr, "checkpoint_every": 0, "eval_pairs": test, "batch_size": 4})})
    started = time.perf_counter()
    report = run_train_personalizer(settings, resume=False)
    out["train_seconds"] = round(time.perf_counter() - started, 1)
    parts = load_sdxl_parts(*sdxl_folders(settings))
    untrained = Personalizer(parts, seed=settings.personalizer.seed)
    data = PersonalizerPairs(settings.open_lake(), "two_stage", "test", (96, 64), untrained.tokenizers,
                             reference_processor(parts.image_encoder.config))
    cfg = settings.personalizer
    trained = Personalizer(load_sdxl_parts(*sdxl_folders(settings)), seed=cfg.seed)
    from safetensors.torch import load_file

    trained.adapter.load_export_state_dict(load_file(str(report.adapter_dir / "ip_adapter.safetensors")))
    score = lambda model, **kw: heldout_loss(model, data, len(data), cfg.batch_size, cfg.seed, repeats=16, **kw)  # noqa: E731
    out["heldout_loss"] = {
        "trained adapter": score(trained),
        "adapter off (scale 0)": score(trained, scale=0.0),
        "untrained adapter": score(untrained),
        "trained adapter, another character's reference": score(trained, shuffle_references=True),
    }
    out["train_loss_first_last_10"] = [sum(report.losses[:10]) / 10, sum(report.losses[-10:]) / 10]

    for workers in args.workers:
        speed = with_overrides(base, "two_stage", args.speed_steps)
        speed = speed.model_copy(update={"personalizer": speed.personalizer.model_copy(
            update={"checkpoint_every": 0, "num_workers": workers, "checkpoint_dir": root / f"speed-{workers}"})})
        r = run_train_personalizer(speed, resume=False)
        step, wait = r.step_seconds, r.data_seconds
        out[f"speed_workers_{workers}"] = {
            "samples_per_s": round(speed.personalizer.batch_size / (step + wait), 2),
            "step_s": round(step, 4), "data_wait_s": round(wait, 4), "loader_share": round(r.data_share, 4)}
    print(json.dumps(out, indent=1))


if __name__ == "__main__":
    main()
