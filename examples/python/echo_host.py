"""A Python host: spawns the Python echo cell (and any cell commands given as
arguments, separated by --), calls each, prints the answers and shuts them down.

    python3 echo_host.py
    python3 echo_host.py -- ./target/release/echo-cell -- ./build/echo_cell
"""

import logging
import os
import sys
import time

import cellshm

logging.basicConfig(level=logging.INFO, format="%(name)s: %(message)s")


def cell_commands():
    here = os.path.dirname(os.path.abspath(__file__))
    commands = [[sys.executable, os.path.join(here, "echo_cell.py")]]
    args = sys.argv[1:]
    current = []
    for arg in args + ["--"]:
        if arg == "--":
            if current:
                commands.append(current)
            current = []
        else:
            current.append(arg)
    return commands


with cellshm.Hub() as hub:
    print(f"hub {hub.name}")
    peers = [hub.spawn(argv, name=f"echo-{i}") for i, argv in enumerate(cell_commands())]
    for peer in peers:
        peer.wait_ready(10)
        print(f"{peer.name}: ready (pid {peer.pid})")
    for peer in peers:
        answer = peer.call("Echo.echo", b"hello from the Python host", timeout=2.0)
        print(f"{peer.name}: Echo.echo -> {answer.decode()!r}")
        start = time.perf_counter()
        for _ in range(10_000):
            peer.call("Echo.echo", bytes(64), timeout=2.0)
        print(f"{peer.name}: 10000 round trips of 64 B, {(time.perf_counter() - start) * 100:.2f} us each on average")
    print(f"echo-0: Echo.upper -> {peers[0].call('Echo.upper', b'shout', timeout=2.0).decode()!r}")
    for peer in peers:
        print(f"{peer.name}: exited with code {peer.shutdown(2.0)}")
