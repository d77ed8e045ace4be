"""The render side of Blender work (imports bpy): long-lived processes that load a character once and render
many poses and views of it; the asset side never depends on it."""
