"""Blender scene and file I/O shared by the asset and render packages: an empty scene, imports, exports.

bpy keeps one scene per process, so every import starts from an empty scene, with script
auto-execution off so that no Python embedded in a file ever runs. ``.blend`` files are appended
through ``bpy.data.libraries.load`` (data only). bpy is imported inside the functions: importing this
module does not load Blender, so drivers may import modules that use it.
"""

from __future__ import annotations

from collections.abc import Collection
from pathlib import Path

FORMATS = {".glb": "glb", ".gltf": "gltf", ".fbx": "fbx", ".bvh": "bvh", ".blend": "blend"}
#: glTF stores seconds, not frames: animated glTF files are imported on this frame grid.
GLTF_FPS = 30


def file_format(path: str | Path) -> str | None:
    """The format name of ``path`` by its extension (None for one Blender is not asked to read)."""
    return FORMATS.get(Path(path).suffix.lower())


def reset_scene() -> None:
    """An empty scene (bpy keeps one scene per process)."""
    import bpy

    bpy.ops.wm.read_factory_settings(use_empty=True)


def disable_auto_exec() -> None:
    """Never run Python embedded in a loaded file."""
    import bpy

    bpy.context.preferences.filepaths.use_scripts_auto_execute = False


def _importer_message(exc: Exception) -> str:
    """One line from an importer's exception (bpy wraps Python errors in a traceback and a 'Location:' line)."""
    lines = [ln.strip() for ln in str(exc).splitlines() if ln.strip() and not ln.strip().startswith("Location:")]
    return f"{type(exc).__name__}: {lines[-1] if lines else 'the importer failed'}"


def _append_blend(path: str | Path) -> set[str]:
    """Append the objects of a .blend (data only: no UI, no scripts are run)."""
    import bpy

    with bpy.data.libraries.load(str(path), link=False) as (src, dst):
        dst.objects = list(src.objects)
    for obj in dst.objects:
        if obj is not None:
            bpy.context.scene.collection.objects.link(obj)
    return {"FINISHED"}


def import_file(path: str | Path, formats: Collection[str], error: type[Exception], animation: bool = False) -> None:
    """Import ``path`` (one of ``formats``) into a fresh scene; ``error`` with one line if the importer fails.

    ``animation`` keeps an FBX file's animation and samples glTF at :data:`GLTF_FPS` (motion files).
    """
    import bpy

    reset_scene()
    disable_auto_exec()
    fmt = file_format(path)
    try:
        if fmt not in formats:
            raise error(f"unsupported format {Path(path).suffix!r}")
        if fmt in ("glb", "gltf"):
            if animation:
                bpy.context.scene.render.fps, bpy.context.scene.render.fps_base = GLTF_FPS, 1.0
            result = bpy.ops.import_scene.gltf(filepath=str(path), disable_bone_shape=True)
        elif fmt == "fbx":
            result = bpy.ops.import_scene.fbx(filepath=str(path), use_anim=animation, ignore_leaf_bones=False)
        elif fmt == "bvh":
            result = bpy.ops.import_anim.bvh(filepath=str(path), rotate_mode="NATIVE", update_scene_fps=True,
                                             update_scene_duration=True)
        else:
            result = _append_blend(path)
    except error:
        raise
    except Exception as exc:  # importers raise RuntimeError/ValueError/struct errors on bad files
        raise error(_importer_message(exc)) from None
    if "FINISHED" not in result:
        raise error(f"importer returned {sorted(result)}")


def export_glb(path: str | Path, animations: bool = False) -> None:
    """Write the current scene as one GLB (skins, shape keys, packed textures)."""
    import bpy

    bpy.ops.export_scene.gltf(filepath=str(path), export_format="GLB", export_animations=animations,
                              export_skins=True, export_morph=True, export_apply=False, export_yup=True)


def export_animation(armature, path: str | Path) -> None:
    """Write the armature's keyed animation as BVH, FBX or GLB (by extension)."""
    import bpy

    scene = bpy.context.scene
    bpy.ops.object.select_all(action="DESELECT")
    armature.select_set(True)
    bpy.context.view_layer.objects.active = armature
    fmt = file_format(path)
    if fmt == "bvh":
        bpy.ops.export_anim.bvh(filepath=str(path), frame_start=scene.frame_start, frame_end=scene.frame_end,
                                rotate_mode="NATIVE")
    elif fmt == "fbx":
        bpy.ops.export_scene.fbx(filepath=str(path), use_selection=False, bake_anim=True, add_leaf_bones=False,
                                 bake_anim_use_nla_strips=False, bake_anim_use_all_actions=False, bake_anim_simplify_factor=0.0)
    else:
        export_glb(path, animations=True)
