#!/usr/bin/env bash
# Checks rag-lambda's AWS SAM template offline with the SAM CLI and cfn-lint.
#
#   scripts/sam.sh validate   install aws-sam-cli and cfn-lint (once, into target/sam-venv), then
#                             run `sam validate --lint` on rag-lambda/template.yaml
#   scripts/sam.sh version    print the installed sam and cfn-lint versions
#
# Nothing here calls AWS: `--lint` runs cfn-lint only (plain `sam validate` asks IAM for managed
# policies and so needs real credentials, aws/aws-sam-cli#2157). The region is passed on the
# command line because cfn-lint did not read AWS_DEFAULT_REGION (aws/aws-sam-cli#4844); dummy
# credentials and a dead endpoint make any accidental AWS call fail at once instead of finding
# a real account.
#
# Every failure exits non-zero with a message saying which step failed and why.
set -euo pipefail

SAM_VERSION="1.170.0"
# Pinned beside the SAM CLI so that a new cfn-lint rule release cannot change the result.
CFN_LINT_VERSION="1.58.0"
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
STATE="${RAG_SAM_STATE_DIR:-$ROOT/target}"
VENV="$STATE/sam-venv"
TEMPLATE="$ROOT/rag-lambda/template.yaml"
REGION="us-east-1"

die() {
    echo "sam.sh: $*" >&2
    exit 1
}

installed() {
    [[ -x "$VENV/bin/sam" && -x "$VENV/bin/cfn-lint" ]] &&
        "$VENV/bin/python" - "$SAM_VERSION" "$CFN_LINT_VERSION" <<'PY' 2>/dev/null
import sys
from importlib.metadata import version
sys.exit(not (version("aws-sam-cli") == sys.argv[1] and version("cfn-lint") == sys.argv[2]))
PY
}

install_sam() {
    installed && return 0
    command -v python3 >/dev/null || die "python3 not found: install Python 3 (3.9 or newer) to validate the SAM template"
    mkdir -p "$STATE"
    echo "sam.sh: installing aws-sam-cli==$SAM_VERSION and cfn-lint==$CFN_LINT_VERSION into $VENV" >&2
    if [[ ! -x "$VENV/bin/python" ]]; then
        python3 -m venv "$VENV" ||
            die "could not create a Python venv at $VENV (on Debian/Ubuntu: apt-get install python3-venv)"
    fi
    "$VENV/bin/python" -m pip install --quiet --disable-pip-version-check \
        "aws-sam-cli==$SAM_VERSION" "cfn-lint==$CFN_LINT_VERSION" ||
        die "pip could not install aws-sam-cli==$SAM_VERSION and cfn-lint==$CFN_LINT_VERSION into $VENV (is the Python package index reachable?)"
    installed || die "aws-sam-cli and cfn-lint installed but $VENV/bin/sam or $VENV/bin/cfn-lint is missing or of another version"
}

# Runs the SAM CLI with no way to reach AWS: fake credentials, no profile files, a dead
# endpoint, telemetry off, and a HOME of its own whose SAM CLI metadata says the weekly
# "newer version?" check (a request to the Python package index) is not due (a float: the
# SAM CLI ignores an integer there).
offline_sam() {
    local home="$STATE/sam-home"
    mkdir -p "$home/.aws-sam" || die "could not create $home"
    [[ -f "$home/.aws-sam/metadata.json" ]] ||
        echo '{"lastVersionCheck": 32503680000.0, "telemetryEnabled": false}' >"$home/.aws-sam/metadata.json"
    env -u AWS_PROFILE -u AWS_SESSION_TOKEN \
        HOME="$home" \
        AWS_ACCESS_KEY_ID=testing AWS_SECRET_ACCESS_KEY=testing \
        AWS_DEFAULT_REGION="$REGION" AWS_REGION="$REGION" \
        AWS_CONFIG_FILE=/dev/null AWS_SHARED_CREDENTIALS_FILE=/dev/null \
        AWS_ENDPOINT_URL="http://127.0.0.1:9" AWS_EC2_METADATA_DISABLED=true \
        SAM_CLI_TELEMETRY=0 \
        "$VENV/bin/sam" "$@"
}

validate() {
    install_sam
    [[ -f "$TEMPLATE" ]] || die "no template at $TEMPLATE"
    # sam exits non-zero on any cfn-lint match, warnings included.
    (cd "$ROOT" && offline_sam validate --lint --region "$REGION" --template "$TEMPLATE") ||
        die "sam validate --lint failed for $TEMPLATE (see above)"
}

version() {
    installed || die "not installed: run '$0 validate' first"
    "$VENV/bin/sam" --version
    "$VENV/bin/cfn-lint" --version
}

case "${1:-}" in
validate) validate ;;
version) version ;;
*)
    echo "usage: $0 validate|version" >&2
    exit 2
    ;;
esac
