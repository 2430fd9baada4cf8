"""An idle hub makes no wakeups: no timers, no spinning, in the host or its cells.

The one test here is about time by nature: it watches a hub and 12 cells (4 each in
Rust, C and Python) for 5 s and counts every context switch and every CPU tick of every
thread of every process, from /proc."""

import os
import threading
import time
from pathlib import Path
from typing import Dict, List, Tuple

import cellshm

ROOT = Path(__file__).resolve().parents[3]
IDLE_SECONDS = 5.0


def thread_activity(pid: int) -> Dict[str, Tuple[int, int]]:
    """Per thread ("tid:name"): (context switches, CPU clock ticks) so far."""
    activity = {}
    for tid in os.listdir(f"/proc/{pid}/task"):
        try:
            with open(f"/proc/{pid}/task/{tid}/status") as f:
                fields = dict(line.split(":", 1) for line in f if ":" in line)
            with open(f"/proc/{pid}/task/{tid}/stat") as f:
                # Fields after the parenthesised name: utime and stime are 14th and 15th.
                after_name = f.read().rsplit(")", 1)[1].split()
        except FileNotFoundError:
            continue  # the thread ended meanwhile
        switches = int(fields["voluntary_ctxt_switches"]) + int(fields["nonvoluntary_ctxt_switches"])
        ticks = int(after_name[11]) + int(after_name[12])
        activity[f"{tid}:{fields['Name'].strip()}"] = (switches, ticks)
    return activity


def thread_states(pid: int) -> Dict[str, str]:
    """Per thread ("tid"): its scheduler state letter (R running, S sleeping, ...)."""
    states = {}
    for tid in os.listdir(f"/proc/{pid}/task"):
        try:
            with open(f"/proc/{pid}/task/{tid}/stat") as f:
                states[tid] = f.read().rsplit(")", 1)[1].split()[0]
        except FileNotFoundError:
            continue
    return states


def wait_until_asleep(pids: List[int], timeout: float = 5.0, ignore: frozenset = frozenset()) -> None:
    """Polls /proc (nothing signals "asleep") until no thread of `pids` runs, except this
    one, which is reading /proc, and those in `ignore`."""
    me = str(threading.get_native_id())
    deadline = time.monotonic() + timeout
    while True:
        running = {
            (pid, tid)
            for pid in pids
            for tid, state in thread_states(pid).items()
            if state == "R" and tid != me and tid not in ignore
        }
        if not running:
            return
        assert time.monotonic() < deadline, f"threads still running: {running}"
        time.sleep(0.005)


def test_an_idle_hub_with_rust_c_and_python_cells_makes_almost_no_wakeups(
    rust_test_cell: List[str], py_test_cell: List[str]
) -> None:
    c_cell = ROOT / "build" / "test_cell"
    assert c_cell.exists(), "run `make test-c` first"
    cells = {"rust": rust_test_cell, "c": [str(c_cell)], "python": py_test_cell}
    # The host is this pytest process: of its threads, the hub's (named cellshm...) and
    # this one count; the ones other libraries keep in it (grpcio's timer and event-engine
    # threads, left by the gateway tests, which wake on timers of their own) do not.
    me = str(threading.get_native_id())

    def foreign(thread: str) -> bool:
        tid, name = thread.split(":", 1)
        return tid != me and not name.startswith("cellshm")
    with cellshm.Hub(max_peers=12) as hub:
        pids = {"host": os.getpid()}
        for lang, argv in cells.items():
            for i in range(4):
                peer = hub.spawn(argv, name=f"{lang}-{i}", env={"CELLSHM_QUIET": "1"})
                peer.wait_ready(15.0)
                assert peer.call("Echo.echo", b"awake", timeout=5.0) == b"awake"
                pids[peer.name] = peer.pid
        # The adaptive waits that followed the calls spin for 50 us: wait until every
        # thread of every process is asleep before the window opens.
        host_threads = thread_activity(os.getpid())
        wait_until_asleep(list(pids.values()), ignore=frozenset(t.split(":")[0] for t in host_threads if foreign(t)))
        before = {name: thread_activity(pid) for name, pid in pids.items()}
        threading.Event().wait(IDLE_SECONDS)
        after = {name: thread_activity(pid) for name, pid in pids.items()}

    busy = {}
    total_switches = total_ticks = 0
    for name in pids:
        for thread, (switches, ticks) in after[name].items():
            if name == "host" and foreign(thread):
                continue
            was = before[name].get(thread, (0, 0))
            woke, ran = switches - was[0], ticks - was[1]
            total_switches += woke
            total_ticks += ran
            if woke or ran:
                busy[f"{name}/{thread}"] = (woke, ran)
    print(f"idle {IDLE_SECONDS} s, {len(pids)} processes: {total_switches} context switches, {total_ticks} ticks: {busy}")
    # The host's own wait above ends with one switch; a handful more is allowed, a
    # timer in every link thread (4 per link, 12 links) is not.
    assert total_switches <= 12, busy
    # No thread spins: all of them together used less than 5 clock ticks of CPU.
    assert total_ticks < 5, busy
