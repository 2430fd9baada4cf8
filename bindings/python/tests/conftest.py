"""Fixtures: real hubs, real cell processes (Python, Rust, C), nothing mocked."""

import os
import subprocess
import sys
from pathlib import Path
from typing import Iterator, List

import pytest

import cellshm

ROOT = Path(__file__).resolve().parents[3]
HERE = Path(__file__).resolve().parent


def _cargo_binary(name: str) -> Path:
    """A binary of the workspace, built with cargo if it is not there yet."""
    for profile in ("release", "debug"):
        path = ROOT / "target" / profile / name
        if path.exists():
            return path
    packages = ["cellshm-testkit", "cellshm-examples", "cellshm-kv-example", "cellshm-codegen", "cellshm-codegen-check", "cellshm-grpc", "cellshm-cli"]
    subprocess.run(["cargo", "build", "--release", "-q", *[a for p in packages for a in ("-p", p)]], cwd=ROOT, check=True)
    return ROOT / "target" / "release" / name


@pytest.fixture(scope="session")
def rust_test_cell() -> List[str]:
    """The Rust test cell (`cellshm-testkit cell`): Echo.echo, Test.sleep, Test.fail, ..."""
    return [str(_cargo_binary("cellshm-testkit")), "cell"]


@pytest.fixture(scope="session")
def rust_echo_host() -> Path:
    return _cargo_binary("echo-host")


@pytest.fixture(scope="session")
def py_test_cell() -> List[str]:
    return [sys.executable, str(HERE / "cells" / "py_test_cell.py")]


@pytest.fixture
def hub() -> Iterator[cellshm.Hub]:
    with cellshm.Hub() as hub:
        yield hub
        for peer in hub.peers:
            if peer.state != "dead":
                peer.kill()
            try:
                peer.wait_exit(5.0)
            except cellshm.CellshmError:
                pass


def spawn_ready(hub: cellshm.Hub, argv: List[str], **kwargs: object) -> cellshm.Peer:
    env = dict(kwargs.pop("env", {}) or {})  # type: ignore[arg-type]
    env.setdefault("CELLSHM_QUIET", "1")
    peer = hub.spawn(argv, env=env, **kwargs)  # type: ignore[arg-type]
    peer.wait_ready(15.0)
    return peer


def u32(value: int) -> bytes:
    return value.to_bytes(4, "little")


os.environ.setdefault("PYTHONUNBUFFERED", "1")
