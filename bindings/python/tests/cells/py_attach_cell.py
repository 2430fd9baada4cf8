"""A Python cell that attaches to a running hub (argv: HUB_PATH NAME) and serves
Echo.echo until the host says goodbye."""

import sys

import cellshm

cell = cellshm.Cell.attach(sys.argv[1], sys.argv[2])


@cell.method("Echo.echo")
def echo(request: bytes) -> bytes:
    return request


cell.run()
