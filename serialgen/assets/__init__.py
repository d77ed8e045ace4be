"""The asset side of Blender work (imports bpy): turns character and motion files, or the procedural generator,
into rigged characters on the canonical skeleton and clips of canonical rotations. Its Blender-free rules live
in :mod:`serialgen.synthetic`, so they can be tested and used where bpy cannot be imported."""
