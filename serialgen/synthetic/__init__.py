"""The synthetic data's Blender-free side: canonical skeleton, rotations, poses and motion clips, procedural
character specs and body meshes, the character filter's rules and the render plan (numpy only, never bpy)."""
