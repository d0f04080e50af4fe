"""Runs the tests' commands (`SCRIPT.py ARGS`, `-m MODULE ARGS`) as `python` would, minus the import of torch.

A command's process spends 5 to 8 s of a CPU importing torch, torchvision and the project before its first line;
the fuzz table alone runs dozens. This server imports them once, then forks one child per command: the child
is a fresh process as far as the command can tell (its own argv, `__main__`, stdout and stderr files, exit code,
process group), and nothing it does reaches the server or the next command.

The requests come on standard input, one JSON line each: {"argv": [...], "env": {...}, "stdout": FILE,
"stderr": FILE, "timeout": SECONDS}; the answer is one line, the command's exit code as subprocess reports it
(negative: killed by that signal; the whole group is SIGKILLed at the timeout). The server ends at the end of its
input.
"""
import atexit
import importlib
import json
import os
import runpy
import signal
import sys
import time
import traceback
from contextlib import suppress


for module in ("train_teacher", "distill_student", "undistill.evaluate", "undistill.report"):  # for the children
    importlib.import_module(module)


def child(argv, env, stdout, stderr):
    """Become the command: the process `python ARGV` would be in ENV, from the first line of its script on (ENV
    differs from the server's only where the imports above never read it)."""
    os.setpgid(0, 0)  # a group of its own, as the timeout kills the group
    os.environ.clear()
    os.environ.update(env)
    for fd, path, mode in ((0, os.devnull, os.O_RDONLY), (1, stdout, os.O_WRONLY | os.O_CREAT | os.O_TRUNC),
                           (2, stderr, os.O_WRONLY | os.O_CREAT | os.O_TRUNC)):
        opened = os.open(path, mode, 0o644)
        os.dup2(opened, fd)
        os.close(opened)
    sys.stdin = open(0, closefd=False)
    sys.stdout = open(1, "w", closefd=False)  # block-buffered, stderr line-buffered: as python's own to a pipe
    sys.stderr = open(2, "w", buffering=1, errors="backslashreplace", closefd=False)
    code = 0
    try:
        if argv[0] == "-m":
            sys.argv = argv[1:]
            sys.path[0] = os.getcwd()
            runpy.run_module(argv[1], run_name="__main__", alter_sys=True)
        else:
            sys.argv = argv
            sys.path[0] = os.path.dirname(os.path.abspath(argv[0]))
            runpy.run_path(argv[0], run_name="__main__")
    except SystemExit as e:  # what the interpreter makes of sys.exit(...)
        if e.code is None or isinstance(e.code, int):
            code = e.code or 0
        else:
            print(e.code, file=sys.stderr)
            code = 1
    except BaseException:
        traceback.print_exc()
        code = 1
    atexit._run_exitfuncs()
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(code)


def serve(requests, answers):
    for line in requests:
        request = json.loads(line)
        pid = os.fork()
        if pid == 0:
            requests.close()
            answers.close()
            child(request["argv"], request["env"], request["stdout"], request["stderr"])
        deadline = time.monotonic() + request["timeout"]
        while not (done := os.waitpid(pid, os.WNOHANG))[0]:
            if time.monotonic() > deadline:
                with suppress(ProcessLookupError):
                    os.killpg(pid, signal.SIGKILL)
            time.sleep(0.01)
        answers.write(f"{os.waitstatus_to_exitcode(done[1])}\n")
        answers.flush()


if __name__ == "__main__":
    # the answers get standard output to themselves: the children's output goes to their files
    answers = os.fdopen(os.dup(1), "w")
    os.dup2(2, 1)
    serve(sys.stdin, answers)
