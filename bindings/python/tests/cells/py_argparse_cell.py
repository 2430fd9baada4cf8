"""A cell that parses its own command line strictly (argparse exits on any argument it
does not know): it joins only if the host leaves its argv alone."""

import argparse

import cellshm

parser = argparse.ArgumentParser()
parser.add_argument("--greeting", required=True)
args = parser.parse_args()

cell = cellshm.Cell.from_args([])


@cell.method("Greeter.greet")
def greet(request: bytes) -> bytes:
    return args.greeting.encode() + b" " + request


cell.run()
