# The two commands a newcomer needs:
#   make demo   set up, build, and run a lake and a collector on this machine
#   make test   set up, build, and run the whole test suite
#   make bench  lake against its peers, results in bench/results/latest.md (about an hour)
# Both run scripts/setup first (idempotent: fetches and verifies libduckdb).

CARGO ?= cargo

.PHONY: setup build demo test bench clean-demo

setup:
	@scripts/setup

build: setup
	$(CARGO) build --bin lake --bin lake-collector

demo: build
	$$($(CARGO) metadata --format-version 1 --no-deps | python3 -c 'import json,sys; print(json.load(sys.stdin)["target_directory"])')/debug/lake demo

test:
	@scripts/setup peers
	$(CARGO) test --workspace --no-fail-fast

# Side-by-side benchmarks against node_exporter, Prometheus, DuckDB and gzip (bench/README.md).
# Installs its peers itself; never part of `make test`.
bench:
	bench/run $(BENCH_ARGS)

clean-demo:
	rm -rf lake-demo
