"""Training loops (accelerate) and their validation metrics."""
