"""Run under torchrun by test_datafree.py: the ddp backend steps a module trained beside the model (DAFL's
generator) with gradients averaged over the ranks. Each rank's loss weighs the module differently; every rank must
end with the same weights, those of one step on the mean gradient. Saves each rank's weights to argv[1]."""
import sys
from argparse import Namespace

import torch
from torch import nn

from undistill import backends, distributed

ctx = distributed.init("cpu")
torch.manual_seed(0)
model, beside = nn.Linear(2, 1), nn.Linear(2, 1)
config = Namespace(grad_clip=0.0)
backend = backends.DDP(model, torch.optim.SGD(model.parameters(), lr=0.1), config, ctx,
                       [(beside, torch.optim.SGD(beside.parameters(), lr=0.1))])
x = torch.ones(1, 2)
backend.step((ctx.rank + 1) * (backend.trained(x).sum() + beside(x).sum()))
torch.save(beside.state_dict(), f"{sys.argv[1]}/rank{ctx.rank}.pt")
distributed.destroy()
