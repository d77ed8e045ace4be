"""The evaluation test set: reference characters (with domain), categorised prompts and seeds.

Users edit a YAML file (``configs/test_set.yaml`` is the paper's 40 x 20 x 4 layout); without one the
embedded tiny default takes held-out procedural characters (the `pairs` test split: composited,
non-standard poses, never trained on) and one prompt per category.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import yaml

from serialgen.config import ConfigError
from serialgen.storage import Lake
from serialgen.storage.images import ImageDecodeError, decode_image

CATEGORIES = ("action", "background", "viewpoint", "expression")
DOMAINS = ("anime", "real", "synthetic")
#: The embedded default: two held-out characters, one seed, prompts in the synthetic captions' vocabulary
#: (serialgen/synthetic/vocabulary.py), so the offline profiles' attribute probes can check each one.
DEFAULT_SPEC: dict[str, Any] = {
    "held_out_characters": 2,
    "prompts": [
        {"prompt": "a character, full body, front view, walking", "category": "action"},
        {"prompt": "a character, full body, outdoors", "category": "background"},
        {"prompt": "a character, full body, side view", "category": "viewpoint"},
        {"prompt": "a character, bust shot, back view", "category": "viewpoint"},
    ],
    "seeds": [0],
}


class TestSetError(ConfigError):
    """A test set file the user can fix (one line)."""


@dataclass(frozen=True)
class TestCharacter:
    character_id: str
    domain: str
    image: np.ndarray = field(repr=False)   # HxWx3 uint8 reference
    source: str                             # file path or pairs:<pair_id>


@dataclass(frozen=True)
class TestSet:
    characters: list[TestCharacter]
    prompts: list[tuple[str, str]]          # (prompt, category)
    seeds: list[int]

    @property
    def fingerprint(self) -> str:
        """Hash of everything that defines the test set (reference pixels included), for lineage."""
        digest = hashlib.sha256(json.dumps([self.prompts, self.seeds]).encode())
        for c in self.characters:
            digest.update(f"{c.character_id}|{c.domain}|".encode())
            digest.update(np.ascontiguousarray(c.image).tobytes())
        return digest.hexdigest()[:16]

    @property
    def domain_of(self) -> dict[str, str]:
        return {c.character_id: c.domain for c in self.characters}


def load_test_set(lake: Lake, path: Path | None = None,
                  on_error: Callable[[str, str], None] | None = None) -> TestSet:
    """The test set of ``path`` (or the embedded default); unreadable references go to ``on_error(key, reason)``."""
    spec = DEFAULT_SPEC if path is None else _read_spec(Path(path))
    prompts = _prompts(spec.get("prompts") or [], path)
    seeds = [int(s) for s in spec.get("seeds") or [0]]
    characters = held_out_characters(lake, int(spec.get("held_out_characters") or 0))
    base = Path(path).parent if path is not None else Path.cwd()
    for entry in spec.get("characters") or []:
        character_id, domain = str(entry.get("id", "")), entry.get("domain")
        if not character_id or "reference" not in entry or domain not in DOMAINS:
            raise TestSetError(f"{path}: a character needs id, reference and domain ({'/'.join(DOMAINS)}): {entry}")
        file = (base / entry["reference"]).resolve()
        try:
            image = decode_image(file.read_bytes(), mode="RGB")
        except (OSError, ImageDecodeError) as exc:
            if on_error is not None:
                on_error(f"test-set/{character_id}", f"reference {file}: {exc}")
            continue
        characters.append(TestCharacter(character_id, domain, image, str(file)))
    return TestSet(characters, prompts, seeds)


def held_out_characters(lake: Lake, n: int) -> list[TestCharacter]:
    """``n`` test-split characters of `pairs`, each referenced by its first composited pair (by pair id)."""
    if n <= 0:
        return []
    pairs = lake.read("pairs", columns=["pair_id", "character_id"], filter="split = 'test'")
    if pairs.num_rows == 0:
        raise TestSetError(f"no test-split pairs in lake {lake.uri}: run `serialgen composite` first "
                           "(or list characters in the test set file)")
    first: dict[str, str] = {}
    for pair_id, character_id in sorted(zip(pairs["pair_id"].to_pylist(), pairs["character_id"].to_pylist())):
        first.setdefault(character_id, pair_id)
    chosen = sorted(first.items())[:n]
    quoted = ", ".join(f"'{pair_id}'" for _, pair_id in chosen)
    rows = lake.read("pairs", columns=["pair_id", "character_id", "input_image"], filter=f"pair_id IN ({quoted})")
    images = {r["character_id"]: r for r in rows.to_pylist()}
    return [TestCharacter(cid, "synthetic", decode_image(images[cid]["input_image"], mode="RGB"), f"pairs:{pid}")
            for cid, pid in chosen]


def _read_spec(path: Path) -> dict[str, Any]:
    try:
        data = yaml.safe_load(path.read_text())
    except OSError as exc:
        raise TestSetError(f"cannot read test set {path}: {exc.strerror or exc}") from None
    except yaml.YAMLError as exc:
        raise TestSetError(f"test set {path} is not valid YAML: {str(exc).splitlines()[0]}") from None
    if not isinstance(data, dict):
        raise TestSetError(f"test set {path} must hold a mapping (characters, prompts, seeds)")
    return data


def _prompts(entries: list[Any], path: Path | None) -> list[tuple[str, str]]:
    prompts = []
    for entry in entries:
        if not isinstance(entry, dict) or not entry.get("prompt") or entry.get("category") not in CATEGORIES:
            raise TestSetError(f"{path}: a prompt needs prompt and category ({'/'.join(CATEGORIES)}): {entry}")
        prompts.append((str(entry["prompt"]), str(entry["category"])))
    if not prompts:
        raise TestSetError(f"{path}: the test set has no prompts")
    return prompts
