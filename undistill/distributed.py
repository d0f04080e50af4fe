"""Process group and device: the same script runs under `python` (one process) and `torchrun` (one per rank)."""
import os
import signal
import sys
import time
from dataclasses import dataclass

import torch
import torch.distributed as dist

from . import UserError

# Before torch 2.8 (pytorch/pytorch#154976) destroying a gloo group holds the GIL while it waits for the group's
# worker threads, one of which may still need the GIL to free the tensors of the last collective: a hang at exit.
GLOO_DESTRUCTOR_HOLDS_GIL = tuple(int(v) for v in torch.__version__.split(".")[:2]) < (2, 8)


@dataclass
class Context:
    rank: int = 0
    world_size: int = 1
    local_rank: int = 0
    device: torch.device = torch.device("cpu")

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    def per_rank(self, batch_size: int) -> int:
        """Each rank's share of a global batch (at least one image)."""
        return max(1, batch_size // self.world_size)

    def print(self, *args, **kwargs):
        if self.is_main:
            print(*args, **kwargs, flush=True)

    def all_reduce_sum(self, tensor):
        if self.world_size > 1:
            dist.all_reduce(tensor)
        return tensor

    def all_gather(self, tensor):
        """Every rank's tensor (of the same shape), concatenated along the first dimension in rank order."""
        if self.world_size == 1:
            return tensor
        parts = [torch.empty_like(tensor) for _ in range(self.world_size)]
        dist.all_gather(parts, tensor.contiguous())
        return torch.cat(parts)

    def all_reduce_mean(self, tensors):
        """Average each tensor over the ranks, in place (gradients of a module trained outside DDP)."""
        if self.world_size > 1:
            for t in tensors:
                dist.all_reduce(t)
                t /= self.world_size

    def broadcast_buffers(self, module):
        """Give every rank rank 0's buffers (BN running statistics drift apart on each rank's own batches), so
        that all ranks evaluate the model that rank 0 saves."""
        if self.world_size > 1:
            for buffer in module.buffers():
                dist.broadcast(buffer, 0)

    def barrier(self):
        if self.world_size > 1:
            dist.barrier()

    def on_main(self, write):
        """Call `write()` on rank 0 alone (the run's files) and tell every rank how it ended: a UserError there
        (a full or read-only disk, a locked run) is raised on all ranks, which would otherwise wait at the next
        collective for a rank that has stopped and die on a closed connection."""
        error = None
        if self.is_main:
            try:
                write()
            except UserError as e:
                error = str(e)
        if self.world_size > 1:
            shared = [error]
            dist.broadcast_object_list(shared, 0)
            error = shared[0]
        if error is not None:
            raise UserError(error)


def init(device="auto"):
    """Join the torchrun process group if there is one (nccl on GPUs, gloo on the CPU) and pick the device."""
    use_cuda = torch.cuda.is_available() if device == "auto" else device == "cuda"
    if use_cuda and not torch.cuda.is_available():
        raise UserError("--device cuda, but no CUDA GPU is visible; use --device cpu")
    world_size = int(os.environ.get("WORLD_SIZE", 1))
    rank, local_rank = int(os.environ.get("RANK", 0)), int(os.environ.get("LOCAL_RANK", 0))
    if use_cuda:
        torch.cuda.set_device(local_rank)
    if world_size > 1:
        dist.init_process_group("nccl" if use_cuda else "gloo")
    return Context(rank, world_size, local_rank, torch.device("cuda", local_rank) if use_cuda else torch.device("cpu"))


class Terminated(BaseException):
    """SIGTERM (SLURM's, torchrun's when another rank failed, `kill`), raised where the process is, like Ctrl-C."""


def terminate(_signum, _frame):
    raise Terminated


RESUME = "a run continues from its last finished epoch when the same command is given again with --resume"


def run(main, args, sigterm=True, again=RESUME):
    """Run `main(args)`; a UserError becomes one line on stderr (rank 0's) and exit code 2. Ctrl-C and SIGTERM
    abandon the current step and exit 130 and 143 with one line saying how to continue (`again`): every file is
    written atomically, so the last finished epoch is intact. `sigterm=False` leaves SIGTERM to a caller that
    handles it (submitit). The process group is always destroyed."""
    if sigterm:
        signal.signal(signal.SIGTERM, terminate)
    main_rank = int(os.environ.get("RANK", 0)) == 0
    try:
        main(args)
    except UserError as e:
        if main_rank:
            print(f"error: {e}", file=sys.stderr, flush=True)
        sys.exit(2)
    except (KeyboardInterrupt, Terminated) as e:
        if main_rank:
            print(f"{'interrupted' if isinstance(e, KeyboardInterrupt) else 'terminated'} ({again})",
                  file=sys.stderr, flush=True)
        sys.exit(130 if isinstance(e, KeyboardInterrupt) else 143)
    finally:
        destroy()


def destroy():
    """Destroy the process group, if any (gloo jobs abort at exit otherwise)."""
    if dist.is_initialized():
        if dist.get_backend() == "gloo" and GLOO_DESTRUCTOR_HOLDS_GIL:
            time.sleep(0.1)  # without the GIL: gloo's worker threads free their last collective's tensors
        dist.destroy_process_group()
