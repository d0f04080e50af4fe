"""Run under torchrun by test_ffcv.py: each rank reads the coded .beton files of argv[1] with --loader ffcv (two
training epochs, then the test split) and saves the labels (image ids) it saw, and its test images, to argv[2]."""
import sys
from pathlib import Path

import torch

from test_ffcv import TEST_N, TRAIN_N, coded_split
from undistill import distributed, loaders

betons, out = Path(sys.argv[1]), Path(sys.argv[2])
ctx = distributed.init("cpu")
common = dict(seed=1, workers=1, rank=ctx.rank, world_size=ctx.world_size)
train = loaders.LOADERS["ffcv"](coded_split(betons, "train", TRAIN_N), 8, train=True, **common)
seen = {f"epoch{e}": [y.clone() for _, y in train.epoch(e)] for e in (0, 1)}
test = loaders.LOADERS["ffcv"](coded_split(betons, "test", TEST_N), 4, train=False, **common)
seen["test"] = [(x.clone(), y.clone()) for x, y in test.epoch(0)]
torch.save(seen, out / f"rank{ctx.rank}.pt")
distributed.destroy()
