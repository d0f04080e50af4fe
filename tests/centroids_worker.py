"""Run under torchrun by test_cmim.py: each rank observes its own half of a batch; all must end with the same
centroids, equal to a single process observing the whole batch."""
import sys

import torch

from undistill import distributed
from undistill.methods.defenses import ClassCentroids

ctx = distributed.init("cpu")
torch.manual_seed(0)
logits, y = torch.randn(8, 3), torch.tensor([0, 1, 2, 0, 1, 0, 0, 2])
half = slice(0, 4) if ctx.rank == 0 else slice(4, 8)
centroids = ClassCentroids(3, [1.0, 4.0], "ema", momentum=0.5)
centroids.observe(logits[half], y[half], ctx)
torch.save(centroids.q, f"{sys.argv[1]}/rank{ctx.rank}.pt")
distributed.destroy()
