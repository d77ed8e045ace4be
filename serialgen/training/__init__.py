"""Training: one accelerate loop with exact resume, and what each model adds to it (loss, data, validation)."""
