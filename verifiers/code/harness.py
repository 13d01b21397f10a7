"""Runs inside the sandbox: confines itself, then runs each test in its own process.

Started by `verifiers.code.sandbox` as ``python3 -I harness.py`` with an empty environment, in a
fresh working directory, its stdout/stderr going to a size-capped file, a JSON config on stdin and
a pipe for results (`results_fd`). Standard library only: it must start fast and trust nothing.

Order of confinement (it starts as root when the verifier runs as root, as in our containers):
1. new network namespace (no network), mount namespace (private /tmp, /var/tmp, /dev/shm and a
   new /proc) and PID namespace (the harness becomes PID 1: when it exits, the kernel kills every
   process the program left behind, even ones that escaped the process group with setsid);
2. resource limits: CPU seconds, address space, file size, open files, processes;
3. drop to a fresh unprivileged uid (RLIMIT_NPROC is not enforced for root, so a fork bomb as
   root would go unchecked; a uid of its own also keeps it away from every file of ours).
Without root it does what it can: RLIMIT_NPROC, a user+network namespace if the kernel allows
one, else a guard that makes `socket.socket` refuse.

Each test runs in a forked child that executes program, setup and that test, then reports on a
pipe of its own with a per-run nonce: a program that exits early (`sys.exit(0)`, `os._exit(0)`)
or crashes sends no report, so the test counts as failed. The children
cannot reach `results_fd`, which they close before running any candidate code. A test of the form
`assert EXPR == LITERAL` arrives here as just EXPR: the child reports repr(value) and the verifier,
outside the sandbox, compares it with the literal, which never enters the sandbox, so no program
can forge that test, not even by reading the nonce from its own memory.
"""
from __future__ import annotations

import ctypes
import json
import os
import resource
import select
import signal
import sys
import time

CLONE_NEWNS, CLONE_NEWUSER, CLONE_NEWPID, CLONE_NEWNET = 0x00020000, 0x10000000, 0x20000000, 0x40000000
MS_RDONLY, MS_NOSUID, MS_NODEV, MS_REMOUNT, MS_BIND, MS_REC, MS_PRIVATE = 0x1, 0x2, 0x4, 0x20, 0x1000, 0x4000, 0x40000
PR_SET_PDEATHSIG, PR_SET_CHILD_SUBREAPER = 1, 36
REPORT_LIMIT = 64 * 1024
_libc = ctypes.CDLL(None, use_errno=True)


def main() -> None:
    config = json.loads(sys.stdin.buffer.read())
    _reopen_stdin()
    results_fd = config["results_fd"]
    root = config["uid"] is not None
    # Counted before any user namespace, where other users' processes would all look like ours.
    own_processes = 0 if root else _count_own_processes()
    namespaces = _enter_namespaces(root)
    if "pid" in namespaces:
        _become_pid_one(results_fd)
    if "mount" in namespaces:
        _private_mounts(with_proc="pid" in namespaces, expose=config["uid"] is not None)
    _limit(config["limits"], extra_processes=own_processes)
    if config["uid"] is not None:
        _drop_privileges(config["uid"])
    if "pid" in namespaces:
        _die_with_parent()
    # kill(-1) is safe only where "every process we may signal" means the sandbox's own: a PID
    # namespace, or a uid of our own. Otherwise we become the subreaper of everything the tests
    # start (orphans, even those that left the process group, are re-parented to us) and kill
    # our descendants instead.
    if "pid" in namespaces or config["uid"] is not None:
        sweep = _kill_everything_else
    else:
        _libc.prctl(PR_SET_CHILD_SUBREAPER, 1)
        sweep = _kill_descendants
    guard_sockets = "net" not in namespaces
    _emit(results_fd, {"namespaces": sorted(namespaces)})
    for index, test in enumerate(config["tests"]):
        outcome = _run_one(config, test, guard_sockets, results_fd, sweep)
        _emit(results_fd, {"test": index, **outcome})
    _emit(results_fd, {"done": True})
    os.close(results_fd)


def _reopen_stdin() -> None:
    null = os.open(os.devnull, os.O_RDONLY)
    os.dup2(null, 0)
    os.close(null)


def _unshare(flags: int) -> bool:
    return _libc.unshare(flags) == 0


def _enter_namespaces(root: bool) -> set[str]:
    if root:
        if _unshare(CLONE_NEWNET | CLONE_NEWNS | CLONE_NEWPID):
            return {"net", "mount", "pid"}
        return {"net"} if _unshare(CLONE_NEWNET) else set()
    # Unprivileged: a user namespace lets us own a network namespace (where the kernel allows it).
    return {"net", "user"} if _unshare(CLONE_NEWUSER | CLONE_NEWNET) else set()


def _become_pid_one(results_fd: int) -> None:
    """Fork into the new PID namespace; this process stays outside only to wait for it."""
    child = os.fork()
    if child == 0:
        return
    os.close(results_fd)  # EOF reaches the verifier when PID 1 is done
    _, status = os.waitpid(child, 0)
    os._exit(os.waitstatus_to_exitcode(status) & 0xFF)


def _private_mounts(with_proc: bool, expose: bool) -> None:
    # Our mounts must not propagate back to the host.
    if _libc.mount(b"none", b"/", None, MS_REC | MS_PRIVATE, None) != 0:
        return
    _read_only_host()
    if expose:
        _expose_python()
    # Empty, private world-writable directories: a write there never reaches the host. The working
    # directory is already our cwd, so covering /tmp does not hide it from us.
    for path in ("/tmp", "/var/tmp", "/dev/shm", "/run/lock"):
        if os.path.isdir(path):
            _libc.mount(b"tmpfs", path.encode(), b"tmpfs", MS_NOSUID | MS_NODEV, b"size=64m,mode=1777")
    if with_proc:  # only our own processes (and no environ of the host's) under /proc
        _libc.mount(b"proc", b"/proc", b"proc", MS_NOSUID | MS_NODEV, None)


def _read_only_host() -> None:
    """Every mount read-only in our namespace except the working directory, so that not even a
    world-writable file of the host can be changed."""
    work = os.getcwd()
    _libc.mount(work.encode(), work.encode(), None, MS_BIND, None)  # its own mount, made writable below
    for mount_point in _mount_points():
        _libc.mount(None, mount_point.encode(), None, MS_REMOUNT | MS_BIND | MS_RDONLY, None)
    _libc.mount(None, work.encode(), None, MS_REMOUNT | MS_BIND, None)
    os.chdir(work)  # enter the writable bind mount (the old cwd is the read-only directory below it)


def _mount_points() -> list[str]:
    with open("/proc/self/mountinfo") as mountinfo:
        # Field 5 is the mount point, with spaces and the like escaped as octal (\040).
        points = [line.split()[4].encode().decode("unicode_escape") for line in mountinfo]
    return [p for p in points if not p.startswith(("/proc", "/sys"))]


def _expose_python() -> None:
    """Let the unprivileged uid import the standard library and site-packages.

    Python is often installed under a directory only root may enter (pyenv under /root, mode
    0700). In our mount namespace such a directory is covered with an empty tmpfs into which only
    the Python installation is bind-mounted back: the program can import, but sees nothing else
    of the directory.
    """
    trees = sorted({os.path.realpath(p) for p in (sys.base_prefix, sys.prefix, *sys.path) if p and os.path.isdir(p)})
    trees = [t for i, t in enumerate(trees) if not any(t.startswith(o + os.sep) for o in trees[:i])]
    by_blocker: dict[str, list[str]] = {}
    for tree in trees:
        blocker = _closed_ancestor(tree)
        if blocker is not None:
            by_blocker.setdefault(blocker, []).append(tree)
    for blocker, inside in by_blocker.items():
        handles = {tree: os.open(tree, os.O_PATH) for tree in inside}
        if _libc.mount(b"tmpfs", blocker.encode(), b"tmpfs", MS_NOSUID | MS_NODEV, b"size=1m,mode=0755") != 0:
            continue
        for tree, handle in handles.items():
            os.makedirs(tree, mode=0o755, exist_ok=True)
            _libc.mount(f"/proc/self/fd/{handle}".encode(), tree.encode(), None, MS_BIND | MS_REC, None)
            os.close(handle)


def _closed_ancestor(path: str) -> str | None:
    """The outermost directory on the way to `path` that others may not enter, if any."""
    current = "/"
    for part in path.strip("/").split("/"):
        current = os.path.join(current, part)
        if current != path and not os.stat(current).st_mode & 0o001:
            return current
    return None


def _limit(limits: dict, extra_processes: int) -> None:
    """`extra_processes`: those our uid already runs (without a uid of our own, RLIMIT_NPROC
    counts every process of the user, not just the sandbox's)."""
    memory = limits["memory_mb"] * 1024 * 1024
    files = limits["file_mb"] * 1024 * 1024
    processes = limits["processes"] + extra_processes
    # RLIMIT_CPU is set in each test process (see _child): the harness itself lives across all
    # tests and is bounded by the verifier's wall clock instead.
    for which, value in (
        (resource.RLIMIT_AS, (memory, memory)),
        (resource.RLIMIT_FSIZE, (files, files)),  # also caps the captured output file
        (resource.RLIMIT_NOFILE, (64, 64)),
        (resource.RLIMIT_NPROC, (processes, processes)),
        (resource.RLIMIT_CORE, (0, 0)),
    ):
        resource.setrlimit(which, value)


def _count_own_processes() -> int:
    uid, count = os.getuid(), 0
    for entry in os.listdir("/proc"):
        try:
            count += entry.isdigit() and os.stat(f"/proc/{entry}").st_uid == uid
        except OSError:
            pass
    return count


def _drop_privileges(uid: int) -> None:
    os.setgroups([])
    os.setgid(uid)
    os.setuid(uid)


def _die_with_parent() -> None:
    # Our parent is the bootstrap waiting outside the PID namespace, which the verifier kills at
    # the deadline; PID 1 dying then takes the whole namespace with it. Set after setuid, which
    # clears it.
    _libc.prctl(PR_SET_PDEATHSIG, signal.SIGKILL)


def _emit(fd: int, message: dict) -> None:
    os.write(fd, (json.dumps(message) + "\n").encode())


def _run_one(config: dict, test: str | dict, guard_sockets: bool, results_fd: int, sweep) -> dict:
    """{"passed", "detail"} for an assert test; {"value", "detail"} for a value test (the verifier
    compares the value with an expected result that never enters the sandbox)."""
    nonce = os.urandom(16).hex()
    read_end, write_end = os.pipe()
    try:
        child = os.fork()
    except OSError as error:  # e.g. the process cap is still full of a previous test's processes
        return {"passed": False, "detail": f"not run: cannot start the test ({error})"}
    if child == 0:
        os.setpgid(0, 0)
        _libc.prctl(PR_SET_PDEATHSIG, signal.SIGKILL)  # dies with the harness, whatever kills it
        os.close(read_end)
        os.close(results_fd)
        cpu = int(config["limits"]["cpu_s"])
        resource.setrlimit(resource.RLIMIT_CPU, (cpu, cpu + 1))  # SIGXCPU at cpu s, SIGKILL 1 s later
        _child(config["program"], config["setup"], test, write_end, nonce, guard_sockets)
    os.close(write_end)
    report = _read_report(read_end, config["limits"]["test_wall_s"])
    os.close(read_end)
    for kill in (lambda: os.killpg(child, signal.SIGKILL), lambda: os.kill(child, signal.SIGKILL)):
        try:  # stop whatever the test left running before judging
            kill()
        except (ProcessLookupError, PermissionError):
            pass
    _, status = os.waitpid(child, 0)
    if sweep is not None:
        sweep()
    return _judge(report, status, nonce)


def _read_report(fd: int, wall_s: float) -> bytes:
    deadline, data = time.monotonic() + wall_s, b""
    while b"\n" not in data and len(data) < REPORT_LIMIT:
        remaining = deadline - time.monotonic()
        if remaining <= 0 or not select.select([fd], [], [], remaining)[0]:
            return data + b"\ntimeout"
        chunk = os.read(fd, REPORT_LIMIT)
        if not chunk:
            break
        data += chunk
    return data


def _judge(report: bytes, status: int, nonce: str) -> dict:
    line = report.split(b"\n", 1)[0]
    if report.endswith(b"\ntimeout") and not line:
        return {"passed": False, "detail": "timeout: the test ran past its time limit"}
    try:
        message = json.loads(line)
    except ValueError:
        message = None
    if not isinstance(message, dict) or message.get("nonce") != nonce:
        return {"passed": False, "detail": _death(status)}
    outcome = {"passed": bool(message.get("passed")), "detail": str(message.get("detail", ""))[:300]}
    if isinstance(message.get("value"), str):
        outcome["value"] = message["value"]
    return outcome


def _death(status: int) -> str:
    if os.WIFSIGNALED(status):
        name = signal.Signals(os.WTERMSIG(status)).name
        hint = {"SIGXCPU": "CPU time limit", "SIGXFSZ": "file/output size limit", "SIGKILL": "killed"}.get(name, "")
        return f"crashed: {name}" + (f" ({hint})" if hint else "")
    return f"no result: the program exited (code {os.waitstatus_to_exitcode(status)}) before the test finished"


def _child(program: str, setup: str, test: str | dict, report_fd: int, nonce: str, guard_sockets: bool) -> None:
    passed, detail, value = False, "", None
    try:
        if guard_sockets:
            _refuse_sockets()
        # Not "__main__": an `if __name__ == "__main__":` block of a solution (often reading
        # input()) is not part of what the tests call.
        namespace = {"__name__": "solution", "__builtins__": __builtins__}
        stage = "program"
        exec(compile(program, "solution.py", "exec"), namespace)
        stage = "setup"
        exec(compile(setup, "setup.py", "exec"), namespace)
        stage = "test"
        if isinstance(test, dict):  # a value test: only the expression, never the expected result
            value = repr(eval(compile(test["value_of"], "test.py", "eval"), namespace))
            if len(value) > REPORT_LIMIT // 2:
                value, detail = None, f"the result's repr is over {REPORT_LIMIT // 2} characters"
        else:
            exec(compile(test, "test.py", "exec"), namespace)
            passed = True
    except SystemExit as exit_:
        detail = f"the {stage} called exit({exit_.code!r}) before the test finished"
    except BaseException as error:  # anything the candidate raises is a failed test
        detail = f"{stage} raised {type(error).__name__}: {str(error)[:200]}"
    try:
        for stream in (sys.stdout, sys.stderr):  # keep the program's output (before we get killed)
            try:
                stream.flush()
            except BaseException:
                pass
        report = {"nonce": nonce, "passed": passed, "detail": detail, "value": value}
        os.write(report_fd, (json.dumps(report) + "\n").encode())
    finally:
        os._exit(0)


def _refuse_sockets() -> None:
    import _socket
    import socket

    class RefusedSocket:
        def __init__(self, *args, **kwargs):
            raise PermissionError("network access is disabled in the sandbox")

    socket.socket = _socket.socket = RefusedSocket  # type: ignore[misc]


def _kill_descendants() -> None:
    """SIGKILL our children until none is left; as subreaper, every orphaned descendant becomes
    our child, so this reaches the whole tree. Bounded: the process cap limits how many exist."""
    for _ in range(1000):
        children = _children()
        for pid in children:
            try:
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
        reaped = _reap_exited()
        if not children and not reaped:
            return
        time.sleep(0.005)


def _children() -> list[int]:
    me, found = os.getpid(), []
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                with open(f"/proc/{entry}/stat") as stat:
                    # "pid (comm) state ppid ...": comm may hold spaces, so split after ")".
                    if int(stat.read().rsplit(")", 1)[1].split()[1]) == me:
                        found.append(int(entry))
            except (OSError, ValueError, IndexError):
                pass
    return found


def _reap_exited() -> int:
    count = 0
    while True:
        try:
            pid, _ = os.waitpid(-1, os.WNOHANG)
        except ChildProcessError:
            return count
        if pid == 0:
            return count
        count += 1


def _kill_everything_else() -> None:
    """SIGKILL every other process we may signal (our uid, or our PID namespace), then reap."""
    while True:
        try:
            os.kill(-1, signal.SIGKILL)  # never signals the caller itself (Linux)
        except (ProcessLookupError, PermissionError):
            pass
        try:  # as PID 1 we inherit every orphan, so this waits until all of them are gone
            os.waitpid(-1, 0)
        except ChildProcessError:
            return


if __name__ == "__main__":
    main()
