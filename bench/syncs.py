"""Host syncs inside training steps. Where a step makes the host wait for the device, the device then idles while
the host queues the step's next kernels: at tens of thousands of images per second that is a large share of a step.

`Syncs(device)` counts them in every engine.train_step and in the loop's per-step tally (engine.Tally.add) while it
is active; bench/gpu_correctness.py reports them for every method. On CUDA, torch's sync debug mode reports each
synchronizing call. On the CPU nothing waits, so the operations that synchronize when their tensors are on CUDA are
counted instead: reading a value (.item(), float()), a boolean index, nonzero, bincount, unique, a tensor built from
Python data. That proxy cannot tell device tensors from host ones, so on the CPU the backend's step is left out (the
optimizers read their host-side step counters with .item()); nor does it see a copy to the device.
"""
import collections
import contextlib
import sys
import sysconfig
import traceback
import warnings
from pathlib import Path
from unittest import mock

import torch
from torch.utils._python_dispatch import TorchDispatchMode

from undistill import backends, engine

ROOT = Path(__file__).resolve().parents[1]
# Where installed packages and the interpreter live, a virtual environment inside the checkout (.venv) included
INSTALLED = {Path(p).resolve() for p in (sys.prefix, sys.base_prefix, *sysconfig.get_paths().values())}
# aten operations that wait for the device when their tensors are on CUDA
WAITING = {"_local_scalar_dense", "nonzero", "masked_select", "bincount", "_unique", "_unique2", "unique_dim",
           "unique_consecutive", "lift_fresh"}
INDEXING = {"index", "index_put", "index_put_", "_index_put_impl_"}  # wait when an index is boolean


def is_project(filename):
    """Whether a frame's file is the project's own code: under the checkout, not in an installed package."""
    path = Path(filename).resolve()
    return (path.is_relative_to(ROOT) and not any(path.is_relative_to(p) for p in INSTALLED)
            and not {"site-packages", "dist-packages"} & set(path.parts))


def project_frame():
    """'path:line' of the innermost frame of the project's code outside this file (the innermost frame if none)."""
    frames = [f for f in traceback.extract_stack() if f.filename != __file__]
    mine = [f for f in frames if is_project(f.filename)] or frames
    path = Path(mine[-1].filename)
    return f"{path.relative_to(ROOT) if path.is_relative_to(ROOT) else path}:{mine[-1].lineno}"


class CpuProxy(TorchDispatchMode):
    """Calls `found()` for each operation that would synchronize on CUDA, unless `paused`."""

    def __init__(self, found):
        super().__init__()
        self.found, self.paused = found, False

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        if not self.paused and waits(func.overloadpacket.__name__, args, kwargs):
            self.found()
        return func(*args, **kwargs)


def waits(name, args, kwargs):
    """Whether the aten operation `name` waits for the device when its tensors are on CUDA."""
    if name in INDEXING:  # (tensor, indices, ...): a boolean index is turned into positions on the host
        indices = args[1] if len(args) > 1 and isinstance(args[1], (list, tuple)) else ()
        return any(isinstance(i, torch.Tensor) and i.dtype == torch.bool for i in indices)
    if name == "repeat_interleave":  # the output's length is read back unless given
        return kwargs.get("output_size") is None
    return name in WAITING


class Syncs:
    """While active: `steps`, the training steps taken, and `found`, a Counter of where ('path:line') each host
    sync inside them was called."""

    def __init__(self, device):
        self.device, self.steps, self.found = torch.device(device), 0, collections.Counter()

    @property
    def per_step(self):
        return sum(self.found.values()) / max(self.steps, 1)

    def record(self):
        self.found[project_frame()] += 1

    def __enter__(self):
        self.stack = contextlib.ExitStack()
        watch = self.stack.enter_context(self.watching())
        train_step, add = engine.train_step, engine.Tally.add

        def watched_step(*args, **kwargs):
            self.steps += 1
            with watch():
                return train_step(*args, **kwargs)

        def watched_add(tally, out):
            with watch():
                return add(tally, out)

        self.stack.enter_context(mock.patch.object(engine, "train_step", watched_step))
        self.stack.enter_context(mock.patch.object(engine.Tally, "add", watched_add))
        return self

    def __exit__(self, *exc):
        return self.stack.__exit__(*exc)

    @contextlib.contextmanager
    def watching(self):
        """Yields a context manager that watches the code it encloses."""
        if self.device.type == "cuda":
            with warnings.catch_warnings():
                warnings.simplefilter("always")
                shown = warnings.showwarning
                warnings.showwarning = lambda message, *args, **kwargs: (
                    self.record() if "synchronizing" in str(message) else shown(message, *args, **kwargs))

                @contextlib.contextmanager
                def watch():
                    torch.cuda.set_sync_debug_mode("warn")
                    try:
                        yield
                    finally:
                        torch.cuda.set_sync_debug_mode("default")
                yield watch
            return
        proxy = CpuProxy(self.record)

        def paused(step):
            def run(backend, loss):
                proxy.paused = True
                try:
                    return step(backend, loss)
                finally:
                    proxy.paused = False
            return run

        with contextlib.ExitStack() as stack:
            for backend in set(backends.BACKENDS.values()):
                stack.enter_context(mock.patch.object(backend, "step", paused(backend.step)))
            yield lambda: proxy
