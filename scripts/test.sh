#!/usr/bin/env bash
# The whole test suite, as CI runs it: formatting, lints, every test (moto's server started on
# 127.0.0.1 for the DynamoDB and SQS tests and stopped afterwards; the reference tokenizers
# installed into target/reference-tokenizers for the token budget tests; the AWS SAM CLI and
# cfn-lint installed into target/sam-venv for `sam validate --lint` of the Lambda template;
# Debian's Chromium and ChromeDriver installed for the page's browser test), and the docs.
set -euo pipefail
cd "$(dirname "$0")/.."

step() { printf '\n==> %s\n' "$*"; }

if [ -x scripts/moto.sh ]; then
  step "starting moto's server (DynamoDB, SQS) on 127.0.0.1"
  if ! scripts/moto.sh start; then
    echo "error: moto's server could not start, so the DynamoDB tests cannot run (see above)." >&2
    exit 1
  fi
  trap 'scripts/moto.sh stop' EXIT
  RAG_TEST_DYNAMODB_ENDPOINT="$(cat target/moto.endpoint)"
  export RAG_TEST_DYNAMODB_ENDPOINT
fi

step "installing the reference tokenizers into target/reference-tokenizers"
if ! scripts/reference-tokenizers.sh install; then
  echo "error: the reference tokenizers could not be installed, so the token budget tests cannot run (see above)." >&2
  exit 1
fi
export "$(scripts/reference-tokenizers.sh env)"

# rag-lambda's SAM template, linted offline by the SAM CLI and cfn-lint (installed once into
# target/sam-venv); rag-lambda/tests/template.rs checks its policies and routes besides.
step "sam validate --lint rag-lambda/template.yaml"
if ! scripts/sam.sh validate; then
  echo "error: rag-lambda/template.yaml did not pass sam validate --lint, or the SAM CLI could not be installed (see above)." >&2
  exit 1
fi

# tests/page.rs drives the websocket example's page in headless Chromium through chromedriver.
CHROMIUM="${RAG_TEST_CHROMIUM:-/usr/bin/chromium}"
CHROMEDRIVER="${RAG_TEST_CHROMEDRIVER:-/usr/bin/chromedriver}"
if [ ! -x "$CHROMIUM" ] || [ ! -x "$CHROMEDRIVER" ]; then
  step "installing Debian's chromium and chromium-driver for the page's browser test"
  if [ "$(id -u)" -ne 0 ]; then
    echo "error: $CHROMIUM or $CHROMEDRIVER is missing and installing them needs root:" >&2
    echo "  run 'apt-get install --no-install-recommends chromium chromium-driver' as root," >&2
    echo "  or set RAG_TEST_CHROMIUM and RAG_TEST_CHROMEDRIVER to a Chromium and its chromedriver." >&2
    exit 1
  fi
  if ! { apt-get update -qq &&
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends chromium chromium-driver; }; then
    echo "error: apt-get could not install chromium and chromium-driver, so the page's browser test cannot run (see above)." >&2
    exit 1
  fi
  if [ ! -x "$CHROMIUM" ] || [ ! -x "$CHROMEDRIVER" ]; then
    echo "error: chromium and chromium-driver are installed but $CHROMIUM or $CHROMEDRIVER is still missing." >&2
    exit 1
  fi
fi
export RAG_TEST_CHROMIUM="$CHROMIUM" RAG_TEST_CHROMEDRIVER="$CHROMEDRIVER"

step "cargo fmt --check"
cargo fmt --all -- --check

step "cargo test"
cargo test --workspace --all-features --all-targets
cargo test --workspace --all-features --doc

step "soak tests again, with their invariant counts printed"
cargo test --all-features --test soak --test soak_dynamodb -- --nocapture

step "cargo clippy"
cargo clippy --workspace --all-targets --all-features -- -D warnings

step "cargo doc"
RUSTDOCFLAGS="-D warnings" cargo doc --workspace --all-features --no-deps
