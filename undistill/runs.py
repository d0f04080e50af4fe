"""The run directory, every file the project writes, and the tensor files it reads.

Each file is written under a temporary name in its own directory and renamed over the old one, so a crash or a
full disk leaves the previous version (or nothing), never half a file that a later command would read; a failed
write removes its temporary file. Tensor files are read with `weights_only=True`, any failure one UserError.

A run directory holds `checkpoint.pt` (the last epoch, resumable), `best.pt`, `metrics.jsonl` (one line per
epoch), `summary.json` and `command.txt`, and `.lock` while a process writes it.
"""
import fcntl
import json
import os
import shutil
import socket
import sys
from contextlib import ExitStack, contextmanager, suppress
from pathlib import Path

import torch

from . import UserError, distributed

FILES = ("checkpoint.pt", "best.pt", "metrics.jsonl", "summary.json", "command.txt")


def atomic_write(path, write):
    """Call `write(tmp)` on a temporary path beside `path`, then rename it to `path`. A failed write (a full or
    read-only disk) is one UserError, and `path` keeps its previous version."""
    path = Path(path)
    tmp = path.with_name(f".{path.name}.tmp")
    try:
        write(tmp)
        os.replace(tmp, path)
    except BaseException as e:
        with suppress(OSError):
            tmp.unlink(missing_ok=True)
        if isinstance(e, OSError) or (isinstance(e, RuntimeError) and "PytorchStreamWriter" in str(e)):
            raise UserError(cannot_write(path, e)) from None
        raise


def cannot_write(path, error):
    reason = error.strerror if isinstance(error, OSError) and error.strerror else str(error).splitlines()[-1][:120]
    return (f"cannot write {path} ({reason}): free space on its disk or make it writable; the files written "
            "before are intact (a run continues with --resume)")


def write_text(path, text):
    atomic_write(path, lambda tmp: tmp.write_text(text))


def write_json(path, obj):
    """JSON, indented (an infinite float is written as Infinity, which Python reads back)."""
    write_text(path, json.dumps(obj, indent=2) + "\n")


def load_tensors(path, what):
    """A file of tensors and plain types (a checkpoint, a state_dict), loaded with `weights_only=True`: pickled
    code is refused, and any file that is not such a file is one UserError naming it."""
    path = Path(path)
    if not path.is_file():
        raise UserError(f"{what} {path} {'is not a file' if path.exists() else 'does not exist'}")
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:  # truncated, empty, text, a pickle payload: torch raises a different type for each
        first = (str(e).strip().splitlines() or [type(e).__name__])[0][:120]
        raise UserError(f"{what} {path} is corrupt or not a trusted tensor file (weights_only loading: "
                        f"{first})") from None


def directory(config, role, method, arch):
    """The run's directory (--output, or runs/<role>-<method>-<arch>-s<seed>). Refuses a directory that holds a
    run unless --resume or --overwrite says what to do with it."""
    out = config.output or Path("runs") / f"{role}-{method}-{arch}-s{config.seed}"
    if out.exists() and not out.is_dir():
        raise UserError(f"--output {out} is a file, not a directory: choose another --output")
    if (out / "checkpoint.pt").exists() and not (config.resume or config.overwrite):
        raise UserError(f"{out} already holds a run: add --resume to continue it, --overwrite to start again, "
                        "or choose another --output")
    return out


@contextmanager
def owned(out, ctx=None):
    """Hold `out` while the run writes it: a second process given the same --output is refused, on every rank of
    this run (`ctx`, a distributed.Context; default one process)."""
    held = ExitStack()
    (ctx or distributed.Context()).on_main(lambda: held.enter_context(lock(out)))
    with held:
        yield


@contextmanager
def lock(out):
    """The kernel's lock (flock on out/.lock, removed at the end), so a killed run leaves none that blocks its
    resume; a directory this created is removed again if the run wrote nothing into it."""
    created = not out.exists()
    try:
        out.mkdir(parents=True, exist_ok=True)
        handle = open(out / ".lock", "a+")
    except OSError as e:
        raise UserError(cannot_write(out, e)) from None
    with handle:
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
            if os.fstat(handle.fileno()).st_ino != os.stat(out / ".lock").st_ino:  # removed by a run ending now
                raise BlockingIOError
        except (BlockingIOError, FileNotFoundError):
            handle.seek(0)
            holder = handle.read().strip() or "another process"
            raise UserError(f"--output {out} is in use by {holder}: wait for that run to end, or choose another "
                            "--output") from None
        handle.truncate(0)
        handle.write(f"pid {os.getpid()} on {socket.gethostname()}\n")
        handle.flush()
        try:
            yield
        finally:
            (out / ".lock").unlink(missing_ok=True)  # while still held, so no other process can have locked it
            if created and not any(out.iterdir()):
                out.rmdir()


def start(out):
    """Empty `out` of a previous run's files (only this project's: --output may hold others) and record the
    command. Rank 0 only."""
    try:
        for name in FILES:
            (out / name).unlink(missing_ok=True)
    except OSError as e:
        raise UserError(cannot_write(out / name, e)) from None
    shutil.rmtree(out / "deepspeed", ignore_errors=True)  # the deepspeed backend's optimizer shards
    write_text(out / "command.txt", " ".join(sys.argv) + "\n")


def read_metrics(out):
    path = out / "metrics.jsonl"
    if not path.exists():
        return []
    try:
        return [json.loads(line) for line in path.read_text().splitlines()]
    except (UnicodeDecodeError, json.JSONDecodeError) as e:
        raise UserError(f"{path} is damaged ({e}): restore it, or delete it to resume with the history of the "
                        "epochs to come only") from None


def write_metrics(out, history):
    # Rewritten whole each epoch (it is tiny), so a resumed run's file matches an uninterrupted one.
    write_text(out / "metrics.jsonl", "".join(json.dumps(h) + "\n" for h in history))


def chosen(validation: dict[str, float | None]) -> str:
    """The run an attacker keeps of a search: the best validation accuracy (at the last epoch), the first in the
    search's order among equals (a run without a validation split is the search's only one)."""
    return max(validation, key=lambda name: -float("inf") if validation[name] is None else validation[name])


def plain(d):
    """JSON- and weights_only-safe copy of an options dict (paths, also in lists and tuples, become strings)."""
    def safe(v):
        return str(v) if isinstance(v, Path) else [safe(i) for i in v] if isinstance(v, (list, tuple)) else v
    return {k: safe(v) for k, v in d.items()}
