"""The render side of Blender work (bpy): scene, camera, posing, keypoints, renderer and the render worker."""
