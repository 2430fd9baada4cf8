# cellshm: the two set-up commands of the quick start are `make demo` and `make test`.
# Both work on a fresh machine with Rust, a C compiler and Python 3: cmake and
# pkg-config are taken from the machine, or installed from PyPI into .venv if missing.

CARGO ?= cargo
CC ?= cc
PYTHON ?= python3
VENV := $(abspath .venv)
LOOM_TARGET_DIR ?= target/loom
# grpcurl (Go), for the gateway's reflection test: `make grpcurl` installs it here.
GRPCURL_VERSION := v1.9.3
TOOLS_BIN := $(abspath .tools/bin)

ifeq ($(shell command -v cmake 2>/dev/null),)
CMAKE := $(VENV)/bin/cmake
CTEST := $(VENV)/bin/ctest
PIP_TOOLS += cmake
else
CMAKE := cmake
CTEST := ctest
endif
ifeq ($(shell command -v pkg-config 2>/dev/null),)
PIP_TOOLS += pkgconf
endif
# Tools installed into .venv are found first.
export PATH := $(VENV)/bin:$(PATH)

.PHONY: grpcurl demo test test-busy test-busy-suites test-rust test-loom test-c test-asan test-python test-chaos chaos python lint header check-header tools bench bench-python clean

## Runs the demo: a Rust host with a Rust cell, a C cell and a Python cell on one hub.
## It builds only what it runs: the Rust examples, libcellshm.a for the C cell (linked
## by the C compiler directly) and the Python package (no test tools, no cmake).
demo:
	$(CARGO) build --profile demo --quiet -p cellshm-examples -p cellshm-ffi
	mkdir -p build-demo
	$(CC) -std=c11 -Wall -Wextra -Werror -Iinclude examples/c/echo_cell.c target/demo/libcellshm.a \
	    -lpthread -ldl -lm -lrt -lutil -o build-demo/echo_cell
	test -x $(VENV)/bin/pip || $(PYTHON) -m venv $(VENV)
	@echo "building the Python package into .venv (a few minutes the first time)"
	CARGO_TARGET_DIR=$(abspath target) MATURIN_PEP517_ARGS="--profile demo" $(VENV)/bin/pip install --quiet ./bindings/python
	./target/demo/echo-host -- ./target/demo/echo-cell -- ./build-demo/echo_cell -- $(VENV)/bin/python examples/python/echo_cell.py

## Runs every test suite.
test: lint check-header test-rust test-loom test-c test-asan test-python test-chaos
	@echo "make test: all suites passed"

## The multi-process Rust suites, ctest and pytest again with two CPU-bound processes
## beside them the whole time: timing assertions must hold on a busy machine (.ci/run).
test-busy: test-c python
	$(CARGO) build --release --quiet -p cellshm-testkit -p cellshm-examples -p cellshm-kv-example -p cellshm-codegen -p cellshm-codegen-check -p cellshm-grpc -p cellshm-cli
	$(CARGO) test --no-run --quiet -p cellshm-testkit -p cellshm-examples -p cellshm-kv-example -p cellshm-codegen-check
	.ci/with-cpu-hogs 2 $(MAKE) --no-print-directory test-busy-suites

test-busy-suites:
	$(CARGO) test --quiet -p cellshm-testkit -p cellshm-examples -p cellshm-kv-example -p cellshm-codegen-check --no-fail-fast
	cd build && $(CTEST) --output-on-failure
	cd bindings/python && $(VENV)/bin/python -m pytest -q -p no:cacheprovider tests ../../tests/matrix ../../tests/cffi
	@echo "make test-busy: the suites passed beside two CPU hogs"

test-rust:
	$(CARGO) test --workspace --exclude cellshm-python --no-fail-fast

## The loom models: SPSC and lap-tagged rings, parked handshake and its lease, the
## servers' work hand-off without timers (runtime::workers, with 1 and 2 servers), waiters,
## the session's call/answer path (answer, give-up and link failure racing), cancellation,
## the stream pool, the metrics' slot claiming and a topic's in-place reads (a separate build with --cfg loom).
test-loom:
	RUSTFLAGS="--cfg loom" $(CARGO) test --release -p cellshm --lib --target-dir $(LOOM_TARGET_DIR) -- loom

## The ctest suite: C and C++ examples and tests, header and symbol checks, install.
test-c: tools
	$(CMAKE) -S . -B build -DCMAKE_BUILD_TYPE=Debug
	$(CMAKE) --build build -j2
	cd build && $(CTEST) --output-on-failure

## The ctest suite again, built with AddressSanitizer (errors and leaks fail it).
test-asan: tools
	$(CMAKE) -S . -B build-asan -DCMAKE_BUILD_TYPE=Debug -DCELLSHM_SANITIZE=ON
	$(CMAKE) --build build-asan -j2
	cd build-asan && $(CTEST) --output-on-failure

## The Python binding, installed into .venv the way users install it.
python:
	test -x $(VENV)/bin/pip || $(PYTHON) -m venv $(VENV)
	$(VENV)/bin/pip install --quiet --upgrade pip maturin pytest pytest-timeout mypy typing_extensions types-protobuf grpcio-tools grpcio-reflection grpcio-health-checking cffi
	@# The extension shares cargo's target directory: the dependencies built for the
	@# workspace are not built again.
	CARGO_TARGET_DIR=$(abspath target) $(VENV)/bin/pip install --quiet './bindings/python[typed]'

## pytest: Python hosts and cells with Rust, C and Python peers; asyncio; GIL; stubs;
## the 3 x 3 cross-language matrix (needs the C programs of test-c); a host written
## against the cffi header alone.
test-python: python test-c grpcurl
	$(CARGO) build --release --quiet -p cellshm-testkit -p cellshm-examples -p cellshm-kv-example -p cellshm-codegen -p cellshm-codegen-check -p cellshm-grpc -p cellshm-cli
	cd bindings/python && $(VENV)/bin/python -m pytest -q -p no:cacheprovider tests ../../tests/matrix ../../tests/cffi

CHAOS_CELLS = -- ./target/release/cellshm-testkit cell -- ./build/test_cell -- $(VENV)/bin/python bindings/python/tests/cells/py_test_cell.py

## Chaos, short: 30 SIGKILLs at random moments to Rust, C and Python cells under a
## supervisor while 4 threads call them (every call ends in time; pools free; no slot lost);
## then 50 SIGKILLs of a host with attach enabled and a Rust, a C and a Python cell (each
## cell exits within 1 s; nothing left in the TMPDIR and XDG_RUNTIME_DIR they were given,
## no cellshm name new in /dev/shm or the abstract socket namespace).
test-chaos: test-c python
	$(CARGO) build --release --quiet -p cellshm-testkit
	./target/release/cellshm-testkit chaos 30 $(CHAOS_CELLS)
	./target/release/cellshm-testkit kill-hosts 50 $(CHAOS_CELLS)

## Chaos, full: 200 rounds.
chaos: test-c python
	$(CARGO) build --release --quiet -p cellshm-testkit
	./target/release/cellshm-testkit chaos 200 $(CHAOS_CELLS)

lint:
	$(CARGO) fmt --all -- --check
	$(CARGO) clippy --workspace --all-targets --quiet -- -D warnings
	@# The published crates' documentation, as docs.rs builds it (every feature), without a warning.
	@# (cellshm-ffi's library is also named cellshm, so it is documented on its own.)
	RUSTDOCFLAGS="-D warnings" $(CARGO) doc --quiet --no-deps --all-features -p cellshm -p cellshm-codegen -p cellshm-grpc
	RUSTDOCFLAGS="-D warnings" $(CARGO) doc --quiet --no-deps -p cellshm-ffi
	@# The crates to publish can be packaged (versions on path dependencies, metadata,
	@# the files they need); building each from its package is left to publishing.
	$(CARGO) package --quiet --no-verify --allow-dirty -p cellshm -p cellshm-grpc -p cellshm-codegen -p cellshm-ffi

## Regenerates include/cellshm.h from ffi/src.
header:
	$(CARGO) run --quiet -p cellshm-header-gen

## Fails if include/cellshm.h is not what ffi/src generates.
check-header:
	$(CARGO) run --quiet -p cellshm-header-gen -- --check

tools:
	@if [ -n "$(PIP_TOOLS)" ]; then \
	  test -x $(VENV)/bin/pip || $(PYTHON) -m venv $(VENV); \
	  echo "installing $(PIP_TOOLS) into .venv"; \
	  $(VENV)/bin/pip install --quiet $(PIP_TOOLS); \
	fi
	@# The C++ kv.Store cell needs protobuf's C++ library and protoc (Debian's packages);
	@# where they cannot be installed, CMake skips it and says so.
	@if ! command -v protoc >/dev/null 2>&1 || [ ! -e /usr/include/google/protobuf/message.h ]; then \
	  if [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then \
	    echo "installing libprotobuf-dev and protobuf-compiler (apt)"; \
	    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends libprotobuf-dev protobuf-compiler >/dev/null 2>&1 \
	      || (apt-get update -qq >/dev/null 2>&1 && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends libprotobuf-dev protobuf-compiler >/dev/null 2>&1) \
	      || echo "could not install them: the C++ kv.Store cell will be skipped"; \
	  else \
	    echo "protobuf's C++ library or protoc is missing and cannot be installed here: the C++ kv.Store cell will be skipped"; \
	  fi; \
	fi

## grpcurl from the Go module proxy into .tools/bin (the gateway's reflection test uses
## it; without Go, or offline, that test is skipped and says why).
grpcurl:
	@if [ -x $(TOOLS_BIN)/grpcurl ]; then :; \
	elif command -v go >/dev/null 2>&1; then \
	  echo "installing grpcurl $(GRPCURL_VERSION) into .tools/bin (go install)"; \
	  GOBIN=$(TOOLS_BIN) GOFLAGS=-buildvcs=false go install github.com/fullstorydev/grpcurl/cmd/grpcurl@$(GRPCURL_VERSION) \
	    || echo "could not install grpcurl: the gateway's grpcurl test will be skipped"; \
	else \
	  echo "Go is not installed: the gateway's grpcurl test will be skipped"; \
	fi

## Round-trip benchmarks beside their floors, Rust and C API in one run (BENCHMARKS.md).
bench: tools
	$(CMAKE) -S . -B build -DCMAKE_BUILD_TYPE=Release > /dev/null
	$(CMAKE) --build build --target bench_c_caller > /dev/null
	CELLSHM_C_BENCH=./build/bench_c_caller $(CARGO) run --release --quiet -p cellshm-bench --

## Python round trips beside multiprocessing.Pipe, socketpair and pyzmq (own venv).
bench-python: python
	$(CARGO) build --release --quiet -p cellshm-testkit -p cellshm-kv-example
	test -x .venv-bench/bin/python || $(PYTHON) -m venv .venv-bench
	.venv-bench/bin/pip install --quiet pyzmq './bindings/python[typed]'
	.venv-bench/bin/python bindings/python/bench/bench.py

clean:
	$(CARGO) clean
	rm -rf build build-asan build-demo
