"""The run directory and every file the project writes.

Each file is written under a temporary name in its own directory and renamed over the old one, so a crash or a
full disk leaves the previous version (or nothing), never half a file that a later command would read; a failed
write removes its temporary file.

A run directory holds `checkpoint.pt` (the last epoch, resumable), `best.pt`, `metrics.jsonl` (one line per
epoch), `summary.json` and `command.txt`.
"""
import json
import os
import shutil
import sys
from pathlib import Path

from . import UserError

FILES = ("checkpoint.pt", "best.pt", "metrics.jsonl", "summary.json", "command.txt")


def atomic_write(path, write):
    """Call `write(tmp)` on a temporary path beside `path`, then rename it to `path`."""
    path = Path(path)
    tmp = path.with_name(f".{path.name}.tmp")
    try:
        write(tmp)
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


def write_text(path, text):
    atomic_write(path, lambda tmp: tmp.write_text(text))


def write_json(path, obj):
    """JSON, indented (an infinite float is written as Infinity, which Python reads back)."""
    write_text(path, json.dumps(obj, indent=2) + "\n")


def directory(config, role, method, arch):
    """The run's directory (--output, or runs/<role>-<method>-<arch>-s<seed>). Refuses a directory that holds a
    run unless --resume or --overwrite says what to do with it."""
    out = config.output or Path("runs") / f"{role}-{method}-{arch}-s{config.seed}"
    if (out / "checkpoint.pt").exists() and not (config.resume or config.overwrite):
        raise UserError(f"{out} already holds a run: add --resume to continue it, --overwrite to start again, "
                        "or choose another --output")
    return out


def start(out):
    """Empty `out` of a previous run's files (only this project's: --output may hold others) and record the
    command. Rank 0 only."""
    out.mkdir(parents=True, exist_ok=True)
    for name in FILES:
        (out / name).unlink(missing_ok=True)
    shutil.rmtree(out / "deepspeed", ignore_errors=True)  # the deepspeed backend's optimizer shards
    write_text(out / "command.txt", " ".join(sys.argv) + "\n")


def read_metrics(out):
    path = out / "metrics.jsonl"
    return [json.loads(line) for line in path.read_text().splitlines()] if path.exists() else []


def write_metrics(out, history):
    # Rewritten whole each epoch (it is tiny), so a resumed run's file matches an uninterrupted one.
    write_text(out / "metrics.jsonl", "".join(json.dumps(h) + "\n" for h in history))


def plain(d):
    """JSON- and weights_only-safe copy of an options dict (paths, also in lists and tuples, become strings)."""
    def safe(v):
        return str(v) if isinstance(v, Path) else [safe(i) for i in v] if isinstance(v, (list, tuple)) else v
    return {k: safe(v) for k, v in d.items()}
