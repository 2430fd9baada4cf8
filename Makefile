# cellshm: the two set-up commands of the quick start are `make demo` and `make test`.
# Both work on a fresh machine with Rust, a C compiler and Python 3.

CARGO ?= cargo
LOOM_TARGET_DIR ?= target/loom

.PHONY: demo test test-rust test-loom lint bench chaos clean

## Runs the demo: a Rust host spawning echo cells on one hub.
demo:
	$(CARGO) build --release --quiet -p cellshm-examples
	./target/release/echo-host

## Runs every test suite.
test: lint test-rust test-loom
	@echo "make test: all suites passed"

test-rust:
	$(CARGO) test --workspace --no-fail-fast

## The loom models: SPSC ring and parked handshake (a separate build with --cfg loom).
test-loom:
	RUSTFLAGS="--cfg loom" $(CARGO) test --release -p cellshm --lib --target-dir $(LOOM_TARGET_DIR) -- loom

lint:
	$(CARGO) fmt --all -- --check
	$(CARGO) clippy --workspace --all-targets --quiet -- -D warnings

## Round-trip benchmarks beside their floors (see BENCHMARKS.md).
bench:
	$(CARGO) run --release --quiet -p cellshm --bin cellshm -- bench

clean:
	$(CARGO) clean
