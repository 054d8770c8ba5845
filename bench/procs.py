"""Process plumbing: CPU and memory from /proc (a process's and the machine's), and children
that never outlive the bench."""

from __future__ import annotations

import contextlib
import ctypes
import os
import signal
import subprocess
from collections.abc import Callable, Iterable
from multiprocessing.connection import Connection
from typing import Any

_CLK_TCK = os.sysconf("SC_CLK_TCK")
_PAGE = os.sysconf("SC_PAGE_SIZE")
_PR_SET_PDEATHSIG = 1


def cpu_seconds(pid: int) -> float:
    """utime + stime of a whole process (all its threads), in seconds; 1/CLK_TCK resolution."""
    with open(f"/proc/{pid}/stat") as f:
        stat = f.read()
    # The command name (field 2) may hold spaces; fields after its closing ')' are fixed.
    fields = stat[stat.rindex(")") + 2 :].split()
    utime, stime = int(fields[11]), int(fields[12])
    return (utime + stime) / _CLK_TCK


def descendants(pid: int) -> list[int]:
    """The live processes below `pid` (children, theirs, …), parents before their children,
    from /proc/<pid>/task/*/children; [] once `pid` is gone."""
    found: list[int] = []
    pending = [pid]
    while pending:
        parent = pending.pop(0)
        try:
            tasks = os.listdir(f"/proc/{parent}/task")
        except OSError:
            continue
        for task in tasks:
            try:
                with open(f"/proc/{parent}/task/{task}/children") as f:
                    children = [int(c) for c in f.read().split()]
            except OSError:
                continue  # the thread or the process ended meanwhile
            found += children
            pending += children
    return found


def tree_cpu(pid: int) -> dict[int, float]:
    """cpu_seconds of `pid` and of each of its live descendants, `pid` first: a server that
    is a supervisor of worker processes (bench.runner's nexus-workers) is all of them. A
    descendant that ends between two readings takes its CPU with it."""
    times = {pid: cpu_seconds(pid)}
    for child in descendants(pid):
        with contextlib.suppress(OSError):  # it ended since it was listed
            times[child] = cpu_seconds(child)
    return times


def tree_cpu_seconds(pid: int) -> float:
    """utime + stime of `pid` and its live descendants; the same as cpu_seconds for a process
    without children."""
    return sum(tree_cpu(pid).values())


def machine_busy() -> float:
    """CPU seconds the whole machine has spent busy (every core; /proc/stat's first line:
    everything but idle and iowait), so two readings give how busy it was in between."""
    with open("/proc/stat") as f:
        fields = [int(x) for x in f.readline().split()[1:]]
    idle = fields[3] + (fields[4] if len(fields) > 4 else 0)
    return (sum(fields[:8]) - idle) / _CLK_TCK


def load_average() -> float:
    """The one-minute load average: runnable tasks, ours and everyone else's."""
    with open("/proc/loadavg") as f:
        return float(f.read().split()[0])


def rss_bytes(pid: int) -> int:
    with open(f"/proc/{pid}/statm") as f:
        return int(f.read().split()[1]) * _PAGE


def tree_rss_bytes(pid: int) -> int:
    """The resident memory of `pid` and its live descendants together."""
    total = rss_bytes(pid)
    for child in descendants(pid):
        with contextlib.suppress(OSError):
            total += rss_bytes(child)
    return total


def die_with_parent(sig: int = signal.SIGTERM) -> None:
    """Ask Linux to send `sig` to this process when its parent dies (even by SIGKILL).

    Call it first thing in a child. If the parent is already gone (re-parented to init or a
    subreaper), exit at once rather than serve forever.
    """
    parent = os.getppid()
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(_PR_SET_PDEATHSIG, sig, 0, 0, 0)
    except (OSError, AttributeError):
        pass  # not Linux: fall back on the parent's own cleanup
    if os.getppid() != parent or parent == 1:
        os._exit(1)


def stop_process(proc: subprocess.Popen[bytes], grace: float = 5.0) -> None:
    """SIGTERM, wait up to `grace` seconds, then SIGKILL; always reaps the child."""
    if proc.poll() is not None:
        return
    proc.send_signal(signal.SIGTERM)
    try:
        proc.wait(grace)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()


def client_process(conn: Connection, cpus: str, body: Callable[[], object]) -> None:
    """A load-generating child's frame around `body`: dies with the bench, runs on `cpus`
    (taskset-style list; empty: anywhere), reports a crash to the parent, closes its pipe."""
    die_with_parent()
    if cpus:
        os.sched_setaffinity(0, {int(c) for c in cpus.split(",")})
    try:
        body()
    except KeyboardInterrupt:
        pass  # Ctrl-C reaches the whole process group; the parent reports it
    except Exception as error:  # reported to the parent, which raises it
        conn.send({"kind": "error", "error": f"{type(error).__name__}: {error}"})
    finally:
        conn.close()


def reap(procs: Iterable[Any], conns: Iterable[Connection]) -> None:
    """Kill what still runs among the children (multiprocessing processes) and close pipes."""
    for proc in procs:
        if proc.is_alive():
            proc.kill()
        proc.join()
    for conn in conns:
        conn.close()
