"""Settings for the whole suite.

Tests train and sample real tiny models on the CPU. On a 2-core machine two OpenMP threads per
process spin against each other and against the verifier workers: a tiny model's training step
measured about 10x slower with 2 threads than with 1. So every test runs torch on one thread.
"""
import torch

torch.set_num_threads(1)
