# ruvector: the two set-up commands are `make demo` and `make test`.
# Each installs what is missing first (scripts/setup), so both work on a fresh
# Debian 12 machine, as root or as a user with sudo.

SHELL := /bin/bash
PG_CONFIG ?= /usr/lib/postgresql/15/bin/pg_config
DEMO_PORT ?= 28850
export DEMO_PORT

.PHONY: all setup build install demo stop test test-setup test-core test-pg test-integration bench lint clean-clusters

all: build

setup:
	./scripts/setup

build: setup
	cargo build --workspace

# Builds the extension (release) and installs it into the system PostgreSQL 15,
# with the previous releases' install scripts (see install_release in
# scripts/lib.sh).
install: setup
	set -euo pipefail; source scripts/lib.sh; install_release

# Starts a cluster with ruvector preloaded, runs the integrity control plane on
# a demo collection and shows what it decided. Leaves the cluster running.
demo: install
	./scripts/demo

stop:
	./scripts/cluster stop demo
	./scripts/cluster stop demo-standby

# Every test tier: the set-up's refusals, core library, in-database (pgrx), and
# cluster integration.
test: test-setup setup test-core test-pg test-integration

test-setup:
	./scripts/test-setup

test-core:
	cargo test -p ruvector-integrity

test-pg: setup
	./scripts/test-pg

test-integration: install
	./scripts/test-integration

# Min cut and λ₂ against other implementations, the gate against a
# table-reading gate, the audit trail's signing and verification, the worker at
# scale, and the solvers' cancel latency (a release build is installed for
# those). Each benchmark cluster takes a free port: a running demo is left alone.
bench: install
	cargo bench -p ruvector-integrity --bench mincut
	cargo bench -p ruvector-integrity --bench soak
	./scripts/test-integration --test soak -- --ignored --nocapture
	./scripts/bench-gate
	./scripts/bench-audit
	./scripts/bench-worker
	./scripts/bench-latency

lint:
	cargo fmt --all -- --check
	cargo clippy --workspace --all-targets -- -D warnings

clean-clusters:
	for c in target/clusters/*/; do [ -d "$$c" ] && ./scripts/cluster stop "$$(basename $$c)"; done; true
