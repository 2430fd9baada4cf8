"""Typed cellshm stubs from .proto files, from the installed package (no Rust toolchain
and no protoc needed):

    python -m cellshm.codegen --lang python --out gen -I proto proto/kv.proto

writes ``kv_pb2.py``/``kv_pb2.pyi`` (protobuf's messages) and ``kv_cellshm.py`` (typed
clients, servicers, ``serve_<svc>``). ``--lang rust`` and ``--lang c`` work too. The
package also installs ``protoc-gen-cellshm``, a protoc plugin for teams that run protoc
or ``grpc_tools.protoc``: ``--cellshm_out=lang=python:gen`` beside ``--python_out``.
"""

from __future__ import annotations

import argparse
import sys
from typing import List, Optional

from . import _native


def main(argv: Optional[List[str]] = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m cellshm.codegen", description=__doc__.split("\n\n")[0])
    parser.add_argument("--lang", required=True, choices=["python", "rust", "c", "cpp"])
    parser.add_argument("--out", required=True, help="where the files go (made if missing)")
    parser.add_argument("-I", "--proto_path", dest="includes", action="append", default=[], help="where .proto files are")
    parser.add_argument("files", nargs="+", metavar="FILE.proto")
    args = parser.parse_args(argv)
    try:
        written = _native.codegen(args.lang, args.out, args.includes or ["."], args.files)
    except (ValueError, OSError) as e:
        print(f"cellshm.codegen: {e}", file=sys.stderr)
        return 1
    for name in written:
        print(name)
    return 0


def protoc_plugin() -> int:
    """``protoc-gen-cellshm``: a CodeGeneratorRequest on stdin, the response on stdout."""
    try:
        response = _native.codegen_plugin(sys.stdin.buffer.read())
    except ValueError as e:
        print(f"protoc-gen-cellshm: {e}", file=sys.stderr)
        return 1
    sys.stdout.buffer.write(response)
    return 0


if __name__ == "__main__":
    sys.exit(main())
