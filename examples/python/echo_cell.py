"""A Python cell serving Echo.echo and Echo.upper. Started by a host, which passes it a
bootstrap socket (CELLSHM_DOORBELL_FD) on which it asks for its link."""

import logging

import cellshm

cell = cellshm.Cell.from_args()
log = logging.getLogger("echo_cell")
log.addHandler(cell.log_handler())
log.setLevel(logging.INFO)


@cell.method("Echo.echo")
def echo(request: bytes) -> bytes:
    return request


@cell.method("Echo.upper")
def upper(request: bytes) -> bytes:
    log.info("upper-casing %d bytes", len(request))
    return request.upper()


cell.run()
