#!/usr/bin/env bash
# Sluice's test command: formatting, lints, unit tests, and the end-to-end tests against a real
# control plane and a real Prometheus. The control plane, helm and Prometheus come from
# tests/cluster/build.sh, which the first phase runs (it builds them from the Go module proxy
# once per machine, a no-op when they are cached); curl, the one other tool, must be on PATH.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."

timings=()
phase() {
  local name=$1
  shift
  local started=$SECONDS
  printf '\n== %s: %s\n' "$name" "$*"
  "$@"
  timings+=("$(printf '%-12s %5ss' "$name" "$((SECONDS - started))")")
}

phase cluster bash tests/cluster/build.sh
phase fmt cargo fmt --all -- --check
phase clippy cargo clippy --workspace --all-targets --locked -- -D warnings
phase build cargo test --workspace --all-targets --locked --no-run
# The e2e tests run the binaries of other packages as processes (the controller, for leader
# election and least privilege; kubectl-sluice): `cargo test` builds only its own package's.
phase bins cargo build --workspace --bins --locked
# Every crate keeps its tests in its own src/ (unit tests); the only integration-test target is
# the e2e binary. Selecting by target, never by package, keeps one feature set: no rebuild.
phase unit cargo test --workspace --locked --lib --bins --examples
phase doc cargo test --workspace --locked --doc
phase e2e cargo test --workspace --locked --test e2e

printf '\n== timings\n'
printf '%s\n' "${timings[@]}"
