#!/usr/bin/env bash
# Runs the whole test suite on a fresh machine: installs the Python tools some tests use to check our
# output with independent readers (an OpenAPI validator, pyarrow), then runs cargo's tests.
set -euo pipefail
cd "$(dirname "$0")/.."

python3 -m pip install --quiet --disable-pip-version-check -r scripts/requirements-test.txt
# Tests that call these tools fail (instead of skipping) when this is set.
export REQUIRE_PY_TEST_TOOLS=1
cargo test --locked
