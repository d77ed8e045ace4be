"""From renders to training pairs: one kernel shared by the Ray composite stage and the on-the-fly training
dataset, so a pair is the same whether it was stored in `pairs` or composited during training."""
