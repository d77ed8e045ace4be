"""The asset side of Blender work (bpy): character import and normalisation, audit, procedural characters,
motion import, retargeting, thumbnails and the assets stage's worker processes."""
