"""A Python host that uses only the shipped cffi header (include/cellshm_cffi.h) and the
shared library, as a cffi user would without the cellshm package: it makes a hub,
serves a host method through a cffi callback, spawns the Rust test cell, calls it
(options from cellshm_call_options_default, a status from the enum, a constant from a
#define) and frees everything."""

from pathlib import Path
from typing import Any, List

import cffi
import pytest

ROOT = Path(__file__).resolve().parents[2]
HEADER = ROOT / "include" / "cellshm_cffi.h"
LIBRARY = ROOT / "target" / "release" / "libcellshm.so.0"
TEST_CELL = ROOT / "target" / "release" / "cellshm-testkit"


@pytest.fixture(scope="module")
def c() -> Any:
    for path in (LIBRARY, TEST_CELL):
        if not path.exists():
            pytest.fail(f"{path} is missing: `make test-c` builds it")
    ffi = cffi.FFI()
    ffi.cdef(HEADER.read_text())
    return ffi, ffi.dlopen(str(LIBRARY))


def check(ffi: Any, lib: Any, status: int) -> None:
    assert status == lib.CELLSHM_OK, ffi.string(lib.cellshm_last_error_message()).decode()


def test_a_host_written_against_the_cffi_header_calls_a_cell(c: Any) -> None:
    ffi, lib = c
    assert ffi.string(lib.cellshm_version()).decode() == "%d.%d.%d" % (
        lib.CELLSHM_VERSION_MAJOR,
        lib.CELLSHM_VERSION_MINOR,
        lib.CELLSHM_VERSION_PATCH,
    )
    assert lib.CELLSHM_TIMEOUT_FOREVER == 2**64 - 1
    hub_out = ffi.new("cellshm_hub **")
    check(ffi, lib, lib.cellshm_hub_new(ffi.NULL, 0, hub_out))
    hub = hub_out[0]
    calls: List[bytes] = []

    @ffi.callback("uint32_t(void *, const uint8_t *, size_t, cellshm_reply *)")
    def host_upper(userdata: Any, request: Any, length: int, reply: Any) -> int:
        data = bytes(ffi.buffer(request, length))
        calls.append(data)
        answer = data.upper()
        return int(lib.cellshm_reply_write(reply, answer, len(answer)))

    check(ffi, lib, lib.cellshm_hub_register(hub, b"Host.upper", host_upper, ffi.NULL, ffi.NULL))
    argv = [ffi.new("char[]", b"cell"), ffi.NULL]
    env = [ffi.new("char[]", b"CELLSHM_QUIET=1"), ffi.NULL]
    peer_out = ffi.new("cellshm_peer **")
    check(
        ffi,
        lib,
        lib.cellshm_hub_spawn(
            hub, b"cffi-cell", str(TEST_CELL).encode(), ffi.new("char *[]", argv), ffi.new("char *[]", env), ffi.NULL, peer_out
        ),
    )
    peer = peer_out[0]
    check(ffi, lib, lib.cellshm_peer_wait_ready(peer, 10000))

    options = ffi.new("cellshm_call_options *", lib.cellshm_call_options_default())
    options.timeout_ms = 10000
    response = ffi.new("cellshm_response **")
    check(ffi, lib, lib.cellshm_peer_call(peer, b"Echo.echo", b"through cffi", 12, options, response))
    assert bytes(ffi.buffer(lib.cellshm_response_data(response[0]), lib.cellshm_response_len(response[0]))) == b"through cffi"
    lib.cellshm_response_free(response[0])

    status = lib.cellshm_peer_call(peer, b"No.such", b"", 0, options, response)
    assert status == lib.CELLSHM_UNIMPLEMENTED
    assert ffi.string(lib.cellshm_status_str(status)) == b"UNIMPLEMENTED"

    # The cell calls back into the host method served by the Python callback.
    request = (5000).to_bytes(4, "little") + b"Host.upper\0" + b"loud"
    check(ffi, lib, lib.cellshm_peer_call(peer, b"Test.call_host_method", request, len(request), options, response))
    assert bytes(ffi.buffer(lib.cellshm_response_data(response[0]), lib.cellshm_response_len(response[0]))) == b"LOUD"
    lib.cellshm_response_free(response[0])
    assert calls == [b"loud"]

    check(ffi, lib, lib.cellshm_peer_shutdown(peer, 5000))
    lib.cellshm_peer_free(peer)
    lib.cellshm_hub_free(hub)
