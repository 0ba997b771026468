# The two commands a newcomer needs:
#   make demo   set up, build, and run a lake and a collector on this machine
#   make test   set up, build, and run the whole test suite (and a 5 s fuzz pass per target)
#   make bench  lake against its peers, results in bench/results/latest.md (about an hour)
# Both run scripts/setup first (idempotent: fetches and verifies libduckdb).

CARGO ?= cargo
# The Python test peers' virtual environment (scripts/setup peers creates it; the tests'
# `python3` is the one in its bin/).
PEERS_VENV ?= $(or $(LAKE_PEERS_VENV),$(or $(XDG_CACHE_HOME),$(HOME)/.cache)/lake/peers-venv)
export LAKE_PEERS_VENV := $(PEERS_VENV)

.PHONY: setup build demo test test-setup lint bench clean-demo fuzz fuzz-smoke collector-aarch64

setup:
	@scripts/setup

# The demo's binaries come from the same build as the tests (`cargo test --no-run` builds
# every binary the tests run, lake and lake-collector included): a plain `cargo build`
# resolves a different unit graph and rebuilt most of the dependencies after `make test`
# (about 6 minutes on 2 cores). This way whichever of `make demo` and `make test` runs
# second reuses the first's build.
build: setup
	PATH="$(PEERS_VENV)/bin:$$PATH" $(CARGO) test --workspace --no-run

demo: build
	$$($(CARGO) metadata --format-version 1 --no-deps | python3 -c 'import json,sys; print(json.load(sys.stdin)["target_directory"])')/debug/lake demo

# scripts/test: set-up, fmt, the test build, then the test run with clippy and the fuzz
# build beside it at the lowest priority, then the fuzz smoke pass; each phase timed.
test:
	@PEERS_VENV="$(PEERS_VENV)" CARGO="$(CARGO)" FUZZ_SMOKE_SECONDS=$(FUZZ_SMOKE_SECONDS) scripts/test

# scripts/setup itself, on a fresh Debian 12 root in a chroot (NodeSource-style Node.js;
# `scripts/test-setup bare` for none): needs root and the package mirrors, takes minutes.
test-setup:
	scripts/test-setup $(SETUP_VARIANT)

# The style gate (CONTRIBUTING.md): rustfmt and clippy with warnings as errors, on the
# workspace and on fuzz/ (a workspace of its own). `make test` (so CI) runs the same checks.
lint: setup
	$(CARGO) fmt --all --check
	$(CARGO) fmt --manifest-path fuzz/Cargo.toml --all --check
	$(CARGO) clippy --workspace --all-targets -- -D warnings

# Fuzzing (fuzz/README.md): every cargo-fuzz target for FUZZ_SECONDS, one after another,
# printing executions, seconds and crashes per target. Stable toolchain; installs cargo-fuzz.
FUZZ_SECONDS ?= 60
FUZZ_SMOKE_SECONDS ?= 5
fuzz: setup
	FUZZ_SECONDS=$(FUZZ_SECONDS) fuzz/run $(FUZZ_TARGETS)

# The short pass `make test` (so CI) runs: every target for FUZZ_SMOKE_SECONDS, built
# unoptimised (half the cold build time of the optimised build).
fuzz-smoke: setup
	FUZZ_SECONDS=$(FUZZ_SMOKE_SECONDS) FUZZ_PROFILE=dev FUZZ_SEED=1 fuzz/run

# Side-by-side benchmarks against node_exporter, Prometheus, DuckDB and gzip (bench/README.md).
# Installs its peers itself; never part of `make test`.
bench:
	bench/run $(BENCH_ARGS)

# The collector for a Raspberry Pi (64-bit Raspberry Pi OS or Debian arm64), cross-built
# on this machine: needs `rustup target add aarch64-unknown-linux-gnu` and Debian's
# gcc-aarch64-linux-gnu (the linker, set in .cargo/config.toml). Checks the output is an
# aarch64 ELF and does not link libduckdb (the collector never does; only `lake` needs it).
# Not part of `make test`: a cold cross build of the dependencies in release mode takes
# many minutes, over CI's time budget. README: "The home site and the network".
AARCH64 := aarch64-unknown-linux-gnu
collector-aarch64:
	@command -v aarch64-linux-gnu-gcc >/dev/null || { echo "collector-aarch64: install the linker: apt-get install gcc-aarch64-linux-gnu" >&2; exit 1; }
	rustup target add $(AARCH64)
	$(CARGO) build --release --target $(AARCH64) -p lake-collector
	@bin="$$($(CARGO) metadata --format-version 1 --no-deps | python3 -c 'import json,sys; print(json.load(sys.stdin)["target_directory"])')/$(AARCH64)/release/lake-collector"; \
	  file "$$bin"; \
	  file "$$bin" | grep -q 'ARM aarch64' || { echo "collector-aarch64: $$bin is not an aarch64 binary" >&2; exit 1; }; \
	  ! readelf -d "$$bin" | grep -q libduckdb || { echo "collector-aarch64: $$bin links libduckdb" >&2; exit 1; }; \
	  readelf -d "$$bin" | grep NEEDED

clean-demo:
	rm -rf lake-demo
