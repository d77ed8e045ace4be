"""The models behind the scores, one class per kind of ruler, with the same calls.

* :class:`ClipFaceEvaluator` (real profiles): CLIP-I, CLIP-T and Face Sim, the paper's metrics, from a
  local CLIP ViT-H/14 and an ArcFace ONNX.
* :class:`ProbeEvaluator` (offline profiles): ID-Sim and identity retrieval from the identity probe,
  prompt accuracy from the attribute probes (:mod:`serialgen.probes`), each validated on held-out
  characters; the numbers a random network would give never reach a report.

``reference_features`` embeds each test character's reference once; ``measure`` reads a batch of outputs
once and gives their identity embeddings (for the across-prompt average, AP-, through ``pairwise``) and
per-item metrics;
``columns`` and ``note`` tell the report what each column is and which model (and validation figure) is
behind it.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

from serialgen.evaluation.clip import ClipModel
from serialgen.evaluation.face import FaceEmbedder
from serialgen.evaluation.metrics import MaskFn, PoseFn, clip_embeddings, clip_i, clip_t, face_embeddings, face_sim
from serialgen.probes import Probes
from serialgen.probes.framed import FramedEmbeddings
from serialgen.synthetic.vocabulary import ATTRIBUTES, prompt_labels


@dataclass
class References:
    """Per test character (in ``ids`` order): whatever the evaluator compares outputs with."""

    ids: list[str]
    features: dict[str, Any]

    def index(self, characters: Sequence[str]) -> list[int]:
        return [self.ids.index(c) for c in characters]


@dataclass
class ClipFaceEvaluator:
    """CLIP (backgrounds removed by the mask model for CLIP-I) and ArcFace on faces found by the pose model."""

    clip: ClipModel
    face: FaceEmbedder
    mask_fn: MaskFn
    pose_fn: PoseFn
    identity_metric = "clip_i"
    ap_metric = "ap_clip_i"
    ap_scale = 100.0
    #: (metric, column header) of the report's main tables, prompt metric first.
    columns = (("clip_t", "CLIP-T"), ("clip_i", "CLIP-I"), ("face_sim", "Face Sim"))

    @property
    def details(self) -> dict[str, Any]:
        return {"clip": self.clip.label, "face": self.face.label}

    @property
    def note(self) -> str:
        return f"CLIP-I / CLIP-T / AP-CLIP-I: {self.clip.label}; Face Sim: {self.face.label}"

    def reference_features(self, ids: list[str], images: Sequence[np.ndarray]) -> References:
        return References(ids, {"clip": clip_embeddings(self.clip, images, self.mask_fn),
                                "face": face_embeddings(self.face, self.pose_fn, images)})

    def pairwise(self, a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
        """CLIP image cosines of unit embeddings."""
        return a @ b.T

    def measure(self, images: Sequence[np.ndarray], characters: Sequence[str], prompts: Sequence[str] | None,
                refs: References) -> tuple[torch.Tensor, dict[str, np.ndarray]]:
        """CLIP-I on the masked figure, Face Sim, and CLIP-T on the whole image when ``prompts`` are given."""
        identity = clip_embeddings(self.clip, images, self.mask_fn)
        own = refs.index(characters)
        out = {"clip_i": clip_i(identity, refs.features["clip"][own]),
               "face_sim": face_sim(face_embeddings(self.face, self.pose_fn, images), refs.features["face"][own]).values}
        if prompts is not None:
            unique = sorted(set(prompts))
            text = dict(zip(unique, self.clip.embed_texts(unique)))
            out["clip_t"] = clip_t(clip_embeddings(self.clip, images), torch.stack([text[p] for p in prompts]))
        return identity, out


@dataclass
class ProbeEvaluator:
    """The pipeline's own probes: identity embedder (figure masked by the mask model) and attribute classifiers."""

    probes: Probes
    mask_fn: MaskFn
    identity_metric = "id_sim"
    ap_metric = "ap_id_sim"
    ap_scale = 1.0
    columns = (("prompt_acc", "prompt accuracy"), ("id_sim", "ID-Sim"), ("id_top1", "ID top-1"))

    @property
    def details(self) -> dict[str, Any]:
        return {"probes": self.probes.label}

    @property
    def note(self) -> str:
        v = self.probes.validation
        identity = v.get("identity", {}).get("vs_standard", {}).get("all")
        attributes = v.get("attributes", {})
        retrieval = (f"held-out retrieval top-1 {identity.get('framed_top1', identity['top1']):.2f} vs pixels "
                     f"{identity['pixels_top1']:.2f}" if identity
                     else "not validated (the lake had no held-out character)")
        accuracy = ", ".join(f"{name} {s['accuracy']:.2f} (majority {s['majority']:.2f})"
                             for name, s in attributes.items() if name in ATTRIBUTES) or "not validated"
        return (f"ID-Sim (probe cosine, figure on white; a close-up compared with the other image cut to its "
                f"framing), AP-ID-Sim and ID top-1 (own character nearest among the test characters): identity "
                f"probe of {self.probes.label}, {retrieval}. Prompt accuracy (share of the "
                f"attributes a prompt names that the output shows): attribute probes, held-out accuracy {accuracy}. "
                "Offline stand-ins for CLIP-I / AP-CLIP-I / CLIP-T, not on the paper's scale")

    def reference_features(self, ids: list[str], images: Sequence[np.ndarray]) -> References:
        return References(ids, {"identity": self.probes.embed_framed(images, [self.mask_fn(i) for i in images])})

    def pairwise(self, a: FramedEmbeddings, b: FramedEmbeddings) -> torch.Tensor:
        """Identity cosines, each pair compared at the narrower of its two framings."""
        return a.similarity(b)

    def measure(self, images: Sequence[np.ndarray], characters: Sequence[str], prompts: Sequence[str] | None,
                refs: References) -> tuple[FramedEmbeddings, dict[str, np.ndarray]]:
        """The figure is cut out once (mask model) for both the identity probe and, when ``prompts`` are
        given, the attribute probes; a close-up output meets its reference cut to the same framing."""
        foregrounds = [self.mask_fn(image) for image in images]
        identity = self.probes.embed_framed(images, foregrounds)
        similarity = self.pairwise(identity, refs.features["identity"])
        own = torch.tensor(refs.index(characters))
        own_sim = similarity[torch.arange(len(own)), own]
        out = {"id_sim": own_sim.double().numpy(),
               "id_top1": ((similarity > own_sim[:, None]).sum(1) == 0).double().numpy()}
        if prompts is not None:
            seen = self.probes.classify(images, foregrounds)
            out["prompt_acc"] = np.array([prompt_accuracy(p, labels) for p, labels in zip(prompts, seen)])
        return identity, out


def prompt_accuracy(prompt: str, seen: dict[str, str]) -> float:
    """Share of the attributes ``prompt`` names that the classifier sees in the output (NaN: it names none)."""
    asked = prompt_labels(prompt)
    return float(np.mean([seen[name] == label for name, label in asked.items()])) if asked else float("nan")


Evaluator = ClipFaceEvaluator | ProbeEvaluator
