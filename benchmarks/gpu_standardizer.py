"""GPU check: SD-1.5-sized standardizer training at 512x768 with random weights (no download).

    python benchmarks/gpu_standardizer.py [--steps 10] [--batch 4] [--workers 6]     # ~3 min on one H100/H200
    python benchmarks/gpu_standardizer.py --tiny                                      # CPU smoke of the same code

Runs the real training loop (``train_standardizer``: accelerate fp16 autocast, AdamW, min-SNR loss,
reference dropout) on random in-memory tensors, and prints per variant the samples/s (median step,
first two steps excluded as warm-up) and the peak GPU memory:
  1. fp16 + gradient checkpointing (the ``sd15`` profile's setting), batch ``--batch``
  2. fp16 without gradient checkpointing
  3. the Lance loader: the same as 1 but reading a temporary `pairs` table stored at 512x768 through
     ``PairsDataset`` with ``--workers`` spawned workers; its data share and time per step vs 1
  4. inference: DDIM 20 steps with guidance (fp16 weights), seconds per image at batch 1
Nothing is downloaded and nothing is written outside a temporary folder.
"""

from __future__ import annotations

import argparse
import gc
import statistics
import sys
import tempfile
import time
from pathlib import Path

from gpu_common import add_tiny_flag, device_and_size


def main() -> None:
    # Imported here: spawned loader workers re-import this module and need none of it.
    import torch

    from serialgen.config import load_settings
    from serialgen.models import Standardizer, random_sd15_components, tiny_components
    from serialgen.pipelines import StandardizationPipeline
    from serialgen.storage.torch_reader import PairsDataset
    from serialgen.training.standardizer import train_standardizer

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=10)
    parser.add_argument("--batch", type=int, default=4)
    parser.add_argument("--workers", type=int, default=6)
    parser.add_argument("--pairs", type=int, default=48, help="pairs written for the Lance loader run")
    add_tiny_flag(parser)
    args = parser.parse_args()
    device, (height, width) = device_and_size(args.tiny)
    cuda = device.type == "cuda"
    root = Path(tempfile.mkdtemp(prefix="gpu-standardizer-"))
    settings = load_settings(lake=str(root / "lake"))
    precision = "fp16" if cuda else "bf16"
    base = settings.standardizer.model_copy(update={
        "width": width, "height": height, "batch_size": args.batch, "steps": 10**6, "checkpoint_every": 0,
        "validation_pairs": 0, "mixed_precision": precision, "learning_rate": 1e-5, "num_workers": 0})
    if cuda:
        print(f"device: {torch.cuda.get_device_name(0)}, torch {torch.__version__}")

    def build() -> Standardizer:
        with torch.device(device):  # random init directly on the device
            parts = tiny_components() if args.tiny else random_sd15_components()
        return Standardizer.from_components(parts)

    def release() -> None:
        gc.collect()
        if cuda:
            torch.cuda.empty_cache()
            torch.cuda.reset_peak_memory_stats()

    def run(name: str, data, **update) -> tuple[float, object]:
        release()
        model = build()
        trainable = sum(p.numel() for p in model.trainable_parameters())
        cfg = base.model_copy(update=update)
        started = time.perf_counter()
        try:
            result = train_standardizer(model, data, cfg, root / name, resume=False, stop_at=args.steps)
        except torch.cuda.OutOfMemoryError:
            print(f"{name:42} out of memory")
            return float("nan"), None
        step = statistics.median(result.step_times[2:] or result.step_times)
        per_step = step + (statistics.median(result.data_times[1:]) if len(result.data_times) > 1 else 0.0)
        peak = torch.cuda.max_memory_allocated() / 2**30 if cuda else float("nan")
        print(f"{name:42} {cfg.batch_size / per_step:8.2f} samples/s  {per_step:7.3f} s/step  "
              f"peak {peak:6.1f} GiB  data share {100 * (result.data_share or 0):5.1f}%  "
              f"first batch {result.loader_start_seconds:5.1f} s  ({trainable / 1e6:.0f} M trainable, "
              f"{time.perf_counter() - started:.0f} s)")
        del model
        return per_step, result

    memory = RandomPairs(args.batch * (args.steps + 2), height, width)
    print(f"{args.steps} steps, batch {args.batch}, {width}x{height}, {precision} autocast")
    if args.tiny:
        torch.set_num_threads(1)
    baseline, _ = run(f"{precision} + gradient checkpointing", memory, gradient_checkpointing=True)
    run(f"{precision}, no gradient checkpointing", memory, gradient_checkpointing=False)

    sys.path.insert(0, str(Path(__file__).resolve().parent))
    from bench_standardizer import write_pairs

    lake = settings.open_lake()
    started = time.perf_counter()
    write_pairs(lake, args.pairs, (height, width))
    print(f"wrote {args.pairs} pairs at {width}x{height} in {time.perf_counter() - started:.1f} s")
    lance = PairsDataset(lake, "train", size=(height, width))
    per_step, _ = run(f"Lance loader, {args.workers} workers, checkpointing", lance, gradient_checkpointing=True,
                      num_workers=args.workers)
    print(f"{'Lance loader vs in-memory tensors':42} {per_step / baseline:8.3f}x time per step")

    release()
    model = build().to(torch.float16 if cuda else torch.bfloat16)  # inference weights
    pipeline = StandardizationPipeline(model, device)
    item = memory[0]
    inputs = [item[k][None] for k in ("input_image", "background_mask", "reference_pose_image", "target_pose_image")]
    pipeline.standardize(*inputs, num_inference_steps=2)  # warm-up
    if cuda:
        torch.cuda.synchronize()
    started = time.perf_counter()
    pipeline.standardize(*inputs, num_inference_steps=20, guidance_scale=3.5)
    if cuda:
        torch.cuda.synchronize()
    peak = torch.cuda.max_memory_allocated() / 2**30 if cuda else float("nan")
    label = f"inference DDIM 20 + guidance, batch 1, {precision}"
    print(f"{label:42} {time.perf_counter() - started:8.2f} s/image  peak {peak:6.1f} GiB")


class RandomPairs:
    """In-memory training items of random tensors (a map-style dataset)."""

    def __init__(self, n: int, height: int, width: int) -> None:
        import torch

        g = torch.Generator().manual_seed(0)
        self.items = [{
            "input_image": torch.rand(3, height, width, generator=g) * 2 - 1,
            "background_mask": (torch.rand(1, height, width, generator=g) > 0.5).float(),
            "reference_pose_image": torch.rand(3, height, width, generator=g),
            "target_image": torch.rand(3, height, width, generator=g) * 2 - 1,
            "target_pose_image": torch.rand(3, height, width, generator=g),
        } for _ in range(n)]

    def __len__(self) -> int:
        return len(self.items)

    def __getitem__(self, index: int):
        return self.items[index]


if __name__ == "__main__":
    main()
