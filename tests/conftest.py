"""Shared test settings."""

import torch

# The tests run tiny models: one thread is faster than two (no sync cost per small matmul) and
# stays fast when the other core is busy (two spinning OpenMP threads then slow down many-fold).
torch.set_num_threads(1)
