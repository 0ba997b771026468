# The two commands a newcomer needs:
#   make demo   set up, build, and run a lake and a collector on this machine
#   make test   set up, build, and run the whole test suite
# Both run scripts/setup first (idempotent: fetches and verifies libduckdb).

CARGO ?= cargo

.PHONY: setup build demo test clean-demo

setup:
	@scripts/setup

build: setup
	$(CARGO) build --bin lake --bin lake-collector

demo: build
	$$($(CARGO) metadata --format-version 1 --no-deps | python3 -c 'import json,sys; print(json.load(sys.stdin)["target_directory"])')/debug/lake demo

test:
	@scripts/setup peers
	$(CARGO) test --workspace --no-fail-fast

clean-demo:
	rm -rf lake-demo
