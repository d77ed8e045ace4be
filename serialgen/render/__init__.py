"""bpy code: characters, motions, scene, camera, keypoints and the render worker. Only this package imports bpy."""
