"""Personalizer benchmark (tiny profile, CPU): does the adapter learn, how fast does it train, and how
much of a step is spent waiting for data.

    python benchmarks/bench_personalizer.py [--characters 16] [--steps 200] [--workers 0 1]

1. Learning: a two_stage adapter is trained on drawn characters (standardized reference -> real
   target); on the held-out characters (test split) the denoising loss of the trained adapter is
   compared, on the same noise and timesteps, with the same SDXL with the adapter off (scale 0), with
   the untrained adapter, and with the trained adapter fed another character's reference.
2. Speed: training samples/s and the loader's share of step time, in-process loading vs spawned workers.

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
from serialgen.models.sdxl import load_sdxl_parts  # noqa: E402
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
    parser.add_argument("--pretrain-base", type=int, default=0,
                        help="first fine-tune the tiny random SDXL UNet (text only) this many steps on the train targets,"
                             " so the base model knows the figures (a stand-in for SDXL's pretraining)")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    root = Path(tempfile.mkdtemp(prefix="bench-personalizer-"))
    base = load_settings(lake=str(root / "lake"))
    test = max(2, args.characters // 4)
    make_real_and_standardized(base.open_lake(), train=args.characters, test=test)
    out: dict = {"characters": {"train": args.characters, "test": test}}
    if args.pretrain_base:
        out["base_pretraining_final_loss"] = pretrain_base(base, args.pretrain_base, args.lr)

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


def pretrain_base(settings, steps: int, lr: float) -> float:
    """Fine-tune every UNet weight of the tiny SDXL on the train targets with their captions (no adapter) and
    save it back into the tiny SDXL folder, which the adapter training then loads as its frozen base."""
    from diffusers import DDPMScheduler
    from torch.nn import functional as F
    from torch.utils.data import default_collate

    from serialgen.training.personalizer_data import build_pairs

    lake = settings.open_lake()
    lake.upsert("personalizer_pairs", build_pairs(lake, "two_stage")[0], "bench-pretrain")
    base_dir, encoder_dir = sdxl_folders(settings)
    parts = load_sdxl_parts(base_dir, encoder_dir)
    data = PersonalizerPairs(lake, "two_stage", "train", (96, 64), (parts.tokenizer, parts.tokenizer_2),
                             reference_processor(parts.image_encoder.config))
    items = [data[i] for i in range(len(data))]
    scheduler = DDPMScheduler(**{k: v for k, v in parts.scheduler_config.items() if k != "timestep_spacing"})
    unet = parts.unet.train()
    optimizer = torch.optim.AdamW(unet.parameters(), lr=lr)
    generator = torch.Generator().manual_seed(0)
    for step in range(steps):
        batch = default_collate([items[int(i)] for i in torch.randint(0, len(items), (4,), generator=generator)])
        with torch.no_grad():
            latents = parts.vae.encode(batch["pixel_values"]).latent_dist.sample(generator) * parts.vae.config.scaling_factor
            first = parts.text_encoder(batch["input_ids"], output_hidden_states=True)
            second = parts.text_encoder_2(batch["input_ids_2"], output_hidden_states=True)
        noise = torch.randn(latents.shape, generator=generator)
        timesteps = torch.randint(0, 1000, (latents.shape[0],), generator=generator)
        prediction = unet(scheduler.add_noise(latents, noise, timesteps), timesteps,
                          encoder_hidden_states=torch.cat([first.hidden_states[-2], second.hidden_states[-2]], -1),
                          added_cond_kwargs={"text_embeds": second.text_embeds, "time_ids": batch["time_ids"]}).sample
        loss = F.mse_loss(prediction, noise)
        loss.backward()
        optimizer.step()
        optimizer.zero_grad()
    unet.save_pretrained(base_dir / "unet", safe_serialization=True)
    return loss.item()


if __name__ == "__main__":
    main()
