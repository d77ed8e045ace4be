"""GPU check: SDXL-sized IP-Adapter training at 512x768 with random weights (no download).

    python benchmarks/gpu_personalizer.py [--steps 12] [--batch 8]     # a few minutes on one H100/H200
    python benchmarks/gpu_personalizer.py --tiny                       # CPU smoke of the same code

Builds SDXL base + ViT-H/14 shaped components (serialgen.models.sdxl.sdxl_configs: 70 cross-attention
layers, 2048-d context, 257 image tokens) with random weights directly on the GPU and runs the real
training loop (``train_personalizer``: accelerate autocast, AdamW on the adapter only, CFG dropout) on
random in-memory items, printing per variant the samples/s (median step, two warm-up steps excluded)
and the peak GPU memory:
  1. fp16 + gradient checkpointing (the ``sdxl`` profile's setting), batch ``--batch``
  2. fp16 without gradient checkpointing
Nothing is downloaded and nothing is written outside a temporary folder.
"""

from __future__ import annotations

import argparse
import gc
import json
import statistics
import sys
import tempfile
from pathlib import Path

import torch
from torch.utils.data import Dataset

from gpu_common import add_tiny_flag, device_and_size

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))


class RandomItems(Dataset):
    """Personalizer items of random pixels and fixed captions, at ``size`` (H, W)."""

    def __init__(self, n: int, size: tuple[int, int], encoder_size: int, tokenizers) -> None:
        self.n, self.size, self.encoder_size = n, size, encoder_size
        self.ids = [t("a character standing in the park, full body", padding="max_length", max_length=77,
                      truncation=True, return_tensors="pt").input_ids[0] for t in tokenizers]

    def __len__(self) -> int:
        return self.n

    def __getitem__(self, index: int) -> dict:
        g = torch.Generator().manual_seed(index)
        return {"pair_id": str(index), "pixel_values": torch.rand(3, *self.size, generator=g) * 2 - 1,
                "reference_pixels": torch.randn(3, self.encoder_size, self.encoder_size, generator=g),
                "time_ids": torch.tensor([*self.size, 0, 0, *self.size], dtype=torch.float32),
                "input_ids": self.ids[0], "input_ids_2": self.ids[1]}


def main() -> None:
    from serialgen.config import load_settings
    from serialgen.models.sdxl import random_sdxl_parts, sdxl_configs, tiny_configs
    from serialgen.training.personalizer import Personalizer, train_personalizer

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=12)
    parser.add_argument("--batch", type=int, default=8)
    add_tiny_flag(parser)
    args = parser.parse_args()
    device, size = device_and_size(args.tiny)
    cuda = device.type == "cuda"
    root = Path(tempfile.mkdtemp(prefix="gpu-personalizer-"))
    settings = load_settings(lake=str(root / "lake"))
    base = settings.personalizer.model_copy(update={
        "width": size[1], "height": size[0], "batch_size": args.batch, "steps": 10**6, "checkpoint_every": 0,
        "mixed_precision": "fp16" if cuda else "bf16", "num_workers": 0})
    results = {"device": torch.cuda.get_device_name(0) if cuda else "cpu", "torch": torch.__version__,
               "resolution": f"{size[1]}x{size[0]}", "batch": args.batch}
    for name, update in (("fp16 + gradient checkpointing", {"gradient_checkpointing": True}),
                         ("fp16", {"gradient_checkpointing": False})):
        gc.collect()
        if cuda:
            torch.cuda.empty_cache()
            torch.cuda.reset_peak_memory_stats()
        with torch.device(device):
            parts = random_sdxl_parts(root / "vocab", tiny_configs() if args.tiny else sdxl_configs())
        model = Personalizer(parts)
        data = RandomItems(args.batch * (args.steps + 1), size, parts.image_encoder.config.image_size,
                           model.tokenizers)
        try:
            result = train_personalizer(model, data, base.model_copy(update=update), root / name.replace(" ", "_"),
                                        resume=False, stop_at=args.steps)
        except torch.cuda.OutOfMemoryError:
            results[name] = "out of memory"
            continue
        step = statistics.median(result.step_times[2:] or result.step_times)
        results[name] = {
            "samples_per_s": round(args.batch / step, 2), "median_step_s": round(step, 3),
            "peak_gib": round(torch.cuda.max_memory_allocated() / 2**30, 1) if cuda else None,
            "adapter_parameters_m": round(sum(p.numel() for p in model.trainable_parameters()) / 1e6, 1),
            "cross_attention_layers": len(model.adapter.processors), "final_loss": round(result.losses[-1], 4)}
        del model, parts, result
    print(json.dumps(results, indent=1))


if __name__ == "__main__":
    main()
