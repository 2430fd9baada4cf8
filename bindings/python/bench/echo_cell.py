"""The Python cell of bench.py: Echo.echo, nothing else."""

import cellshm

cell = cellshm.Cell.from_args()


@cell.method("Echo.echo")
def echo(request: bytes) -> bytes:
    return request


cell.run()
