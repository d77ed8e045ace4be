"""The synthetic data's Blender-free side: the rules of skeletons, poses, characters and render plans in plain
numpy (never bpy), shared by the Blender processes and the drivers that plan their work."""
