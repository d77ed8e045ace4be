"""Compositing: backgrounds, the augmentation + compositing kernel, the character split, and the
pair composer shared by the Ray stage and the on-the-fly training dataset."""
