"""Which Cycles GPU devices a render actor enables: exactly the GPUs Ray assigned to it, never the whole node.

Plain Python, no bpy, so the choice is unit-tested without Blender or a GPU. Blender has been seen to use
every GPU of a node whatever ``CUDA_VISIBLE_DEVICES`` says (BlenderProc #585, #166): enabling all the
devices Cycles lists serialises the node's actors on shared cards. So the actor names its devices:

- Ray's GPU ids (``ray.get_gpu_ids()``) number the node's NVIDIA GPUs in NVML order, which is PCI bus
  order; the actor sets ``CUDA_DEVICE_ORDER=PCI_BUS_ID`` before Blender starts CUDA so CUDA reads
  ``CUDA_VISIBLE_DEVICES`` in the same order.
- Cycles ids of CUDA and OptiX devices end in the card's PCI address (``CUDA_<name>_0000:19:00``, OptiX
  adds ``_OptiX``), and Cycles lists cards with a display last, so list order is not the numbering:
  the devices of the backend are ordered by PCI address.
- Where CUDA honoured ``CUDA_VISIBLE_DEVICES`` Cycles lists only the visible cards: an assigned id is then
  found by its rank among the visible ids; where Cycles lists every card of the node, by its own number.
  Any other count is refused rather than guessed.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass

#: Cycles backends for Ray's (NVIDIA) GPU ids, best first.
NVIDIA_BACKENDS = ("OPTIX", "CUDA")

_PCI = re.compile(r"_([0-9a-fA-F]{4}:[0-9a-fA-F]{2}:[0-9a-fA-F]{2})(?:_OptiX)?$")


class DeviceChoiceError(RuntimeError):
    """The GPUs Ray assigned cannot be matched to the devices Cycles lists."""


@dataclass(frozen=True)
class CyclesDevice:
    """One entry of Cycles' device list (``preferences.addons['cycles'].preferences.devices``)."""

    type: str   # "CPU", "CUDA", "OPTIX", ...
    id: str     # Cycles' device id, e.g. "CUDA_NVIDIA H100 80GB HBM3_0000:19:00"


def pci_address(device: CyclesDevice) -> str:
    match = _PCI.search(device.id)
    if match is None:
        raise DeviceChoiceError(f"no PCI address in the Cycles device id {device.id!r}")
    return match.group(1).lower()


def assigned_devices(gpu_ids: Sequence[int | str], listed: Sequence[CyclesDevice], backend: str,
                     visible: str | None) -> list[CyclesDevice]:
    """The devices of ``backend`` to enable for Ray's ``gpu_ids``; [] when Cycles lists none of that backend.

    ``visible``: the process's ``CUDA_VISIBLE_DEVICES`` (None when unset); ``listed``: every device Cycles
    lists after ``refresh_devices()`` for ``backend``.
    """
    if not gpu_ids:
        raise DeviceChoiceError("render.device is GPU but Ray assigned no GPU (set render.gpus_per_worker > 0)")
    gpus = sorted((d for d in listed if d.type == backend), key=pci_address)
    if not gpus:
        return []
    ids = [str(g) for g in gpu_ids]
    tokens = [t.strip() for t in visible.split(",") if t.strip()] if visible is not None else None
    if tokens is not None and len(gpus) == len(tokens):
        if not set(ids) <= set(tokens):
            raise DeviceChoiceError(f"Ray's GPUs {ids} are not in CUDA_VISIBLE_DEVICES={visible!r}")
        order = sorted(tokens, key=lambda t: (not t.isdigit(), int(t) if t.isdigit() else 0, t))
        ranks = [order.index(i) for i in ids]
    elif all(i.isdigit() and int(i) < len(gpus) for i in ids) and (tokens is None or len(gpus) > len(tokens)):
        ranks = [int(i) for i in ids]   # Cycles lists every card of the node
    else:
        raise DeviceChoiceError(f"Cycles lists {len(gpus)} {backend} devices; cannot place Ray's GPUs {ids} "
                                f"with CUDA_VISIBLE_DEVICES={visible!r}")
    return [gpus[r] for r in ranks]
