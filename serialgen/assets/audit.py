"""The character filter's facts about one file, collected in Blender (a worker process).

Import, normalise and inspect; an accepted-looking character also gets its geometry signature, a
thumbnail and the normalised GLB that later stages load. :mod:`serialgen.synthetic.character_filter`
decides on the facts.
"""

from __future__ import annotations

import tempfile
from pathlib import Path

from serialgen.assets import characters, thumbnails
from serialgen.blender_io import export_glb, file_format
from serialgen.synthetic.character_filter import REQUIRED, Facts, geometry_signature
from serialgen.synthetic.skeleton import BONE_NAMES


def texture_defects(meshes) -> list[str]:
    """Missing/unreadable images of image-textured materials, and textured materials without UVs."""
    defects = []
    for mesh in meshes:
        for mat in {m for m in mesh.data.materials if m is not None and m.node_tree is not None}:
            textures = [n for n in mat.node_tree.nodes if n.type == "TEX_IMAGE"]
            for node in textures:
                image = node.image
                if image is None:
                    defects.append(f"material {mat.name}: image node without image")
                elif not image.has_data and (image.size[0] == 0 or image.size[1] == 0):
                    defects.append(f"material {mat.name}: missing or unreadable image {image.filepath or image.name}")
            if textures and len(mesh.data.uv_layers) == 0:
                defects.append(f"material {mat.name}: textured but mesh {mesh.name} has no UVs")
    return sorted(set(defects))


def collect_facts(path: str | Path, thumbnail_size: tuple[int, int] = (96, 144), thumbnail_samples: int = 4) -> Facts:
    """Import, normalise and inspect one character file (bpy; in a worker process)."""
    fmt = file_format(path) or Path(path).suffix.lstrip(".").lower()
    try:
        characters.load_file(path)
    except characters.CharacterLoadError as exc:
        return Facts(fmt, error=str(exc) or "importer failed")
    char = characters.find_character()
    if char.armature is None:
        return Facts(fmt)
    facts = Facts(fmt, n_bones=len(char.armature.data.bones),
                  n_canonical_bones=sum(1 for b in BONE_NAMES if b in char.mapping),
                  missing_required=tuple(b for b in REQUIRED if b not in char.mapping),
                  n_skinned_meshes=len(char.meshes))
    if facts.missing_required or not char.meshes:
        return facts
    facts.texture_defects = tuple(texture_defects(char.meshes))
    facts.notes = characters.normalize(char)
    facts.height_m = facts.notes["height_m"]
    facts.signature = geometry_signature(*characters.world_triangles(char.meshes))
    if facts.texture_defects:
        return facts
    facts.thumbnail = thumbnails.render_thumbnail(char.meshes, *thumbnail_size, samples=thumbnail_samples)
    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp) / "character.glb"
        export_glb(out)
        facts.normalized_glb = out.read_bytes()
    return facts
