"""Pieces every training loop here shares: the accelerate set-up, resumable checkpoints
(step and data position as an accelerate custom object), EMA weight swapping, TensorBoard, the
run folder's resume rules and the loader's share of step time."""

from __future__ import annotations

import json
import logging
import shutil
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from accelerate import Accelerator
from accelerate.state import AcceleratorState
from accelerate.utils import ProjectConfiguration
from diffusers.training_utils import EMAModel

log = logging.getLogger(__name__)
CHECKPOINT_PREFIX = "checkpoint-"


class TrainState:
    """Step and data position, saved with every checkpoint (an accelerate custom object)."""

    def __init__(self) -> None:
        self.step = 0
        self.epoch = 0
        self.batch_in_epoch = 0

    def state_dict(self) -> dict[str, int]:
        return {"step": self.step, "epoch": self.epoch, "batch_in_epoch": self.batch_in_epoch}

    def load_state_dict(self, state: dict[str, int]) -> None:
        self.step, self.epoch, self.batch_in_epoch = state["step"], state["epoch"], state["batch_in_epoch"]


@dataclass
class LoopTimes:
    """Where a training invocation's time went: waiting for batches vs computing steps."""

    loader_start_seconds: float = 0.0                  # waiting for the first batch (worker start-up)
    data_times: list[float] = field(default_factory=list)  # seconds waiting for each later batch
    step_times: list[float] = field(default_factory=list)  # seconds of each step's forward/backward/update

    @property
    def data_share(self) -> float | None:
        """The loader's share of the time per step after the first batch."""
        total = sum(self.data_times) + sum(self.step_times[1:])
        return sum(self.data_times) / total if total else None


def make_accelerator(cfg: Any, output_dir: Path) -> Accelerator:
    """An Accelerator for a training section ``cfg`` (its ``mixed_precision``); in one process, a later
    run may use another mixed precision."""
    if AcceleratorState._shared_state.get("_mixed_precision") not in (None, cfg.mixed_precision):
        AcceleratorState._reset_state()  # the process-wide state pins the first run's precision
    return Accelerator(mixed_precision=cfg.mixed_precision,
                       project_config=ProjectConfiguration(project_dir=str(output_dir)))


def latest_checkpoint(output_dir: Path) -> Path | None:
    found = checkpoints(output_dir)
    return found[-1] if found else None


def checkpoints(output_dir: Path) -> list[Path]:
    """``checkpoint-<step>`` folders, oldest first."""
    return sorted(Path(output_dir).glob(f"{CHECKPOINT_PREFIX}*"), key=lambda p: int(p.name[len(CHECKPOINT_PREFIX):]))


def save_checkpoint(accelerator: Accelerator, output_dir: Path, step: int, keep: int) -> Path:
    """``accelerator.save_state`` into ``checkpoint-<step>``, keeping the newest ``keep`` (0: all)."""
    folder = output_dir / f"{CHECKPOINT_PREFIX}{step:07d}"
    if accelerator.is_main_process:
        accelerator.save_state(str(folder))
        for old in checkpoints(output_dir)[:-keep] if keep > 0 else []:
            shutil.rmtree(old)
    accelerator.wait_for_everyone()
    return folder


class ema_weights:
    """Context: the EMA weights in place of the trained ones (no-op without EMA)."""

    def __init__(self, ema: EMAModel | None, params: list[torch.nn.Parameter]) -> None:
        self.ema, self.params = ema, params

    def __enter__(self) -> None:
        if self.ema is not None:
            self.ema.store(self.params)
            self.ema.copy_to(self.params)

    def __exit__(self, *exc) -> None:
        if self.ema is not None:
            self.ema.restore(self.params)


def tensorboard(folder: Path):
    from tensorboardX import SummaryWriter

    return SummaryWriter(str(folder))


def prepare_run_folder(output_dir: Path, model: dict[str, Any], data: dict[str, Any], resume: bool) -> None:
    """Refuse to resume a folder trained with another model definition (``model``: the settings that
    define it); start over when ``resume`` is False or the training data changed (``data``: input
    table versions), so that resuming only ever continues an interrupted run on the same data."""
    from serialgen.config import ConfigError

    output_dir.mkdir(parents=True, exist_ok=True)
    marker = output_dir / "training.json"
    stored = json.loads(marker.read_text()) if marker.is_file() else {}
    if resume and any(output_dir.glob(f"{CHECKPOINT_PREFIX}*")):
        changed = sorted(k for k in model if stored.get(k) != model[k])
        if changed:
            raise ConfigError(f"{output_dir} was trained with other {', '.join(changed)}: "
                              "pass --no-resume to start over or choose another run folder")
        if stored.get("data", data) != data:
            log.info("training data changed since %s was written (%s -> %s): starting over",
                     output_dir, stored.get("data"), data)
            resume = False
    if not resume:
        for old in output_dir.glob(f"{CHECKPOINT_PREFIX}*"):
            shutil.rmtree(old)
    marker.write_text(json.dumps({**model, "data": data}, indent=1))
