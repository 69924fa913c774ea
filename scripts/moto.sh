#!/usr/bin/env bash
# Runs moto's server on loopback for the DynamoDB tests (rag-dynamodb, rag-lambda) and the SQS
# tests (rag-lambda).
#
#   scripts/moto.sh start    install moto (once, into target/moto-venv), start it on a free
#                            port of 127.0.0.1, wait until it answers, write
#                            target/moto.endpoint and target/moto.pid
#   scripts/moto.sh stop     stop the server started by `start`
#   scripts/moto.sh status   print the endpoint if the server is running
#
# Then: RAG_TEST_DYNAMODB_ENDPOINT=$(cat target/moto.endpoint) cargo test -p rag-dynamodb
#
# Every failure exits non-zero with a message saying which step failed and why.
set -euo pipefail

MOTO_VERSION="5.2.5"
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
STATE="${RAG_MOTO_STATE_DIR:-$ROOT/target}"
VENV="$STATE/moto-venv"
PID_FILE="$STATE/moto.pid"
ENDPOINT_FILE="$STATE/moto.endpoint"
LOG_FILE="$STATE/moto.log"
WAIT_SECONDS="${RAG_MOTO_WAIT_SECONDS:-30}"

die() {
    echo "moto.sh: $*" >&2
    exit 1
}

running_pid() {
    [[ -f "$PID_FILE" ]] || return 1
    local pid
    pid="$(cat "$PID_FILE")"
    [[ "$pid" =~ ^[0-9]+$ ]] && kill -0 "$pid" 2>/dev/null && echo "$pid"
}

install_moto() {
    if [[ -x "$VENV/bin/python" ]] &&
        "$VENV/bin/python" -c "import moto, sys; sys.exit(moto.__version__ != '$MOTO_VERSION')" 2>/dev/null &&
        [[ -x "$VENV/bin/moto_server" ]]; then
        return 0
    fi
    command -v python3 >/dev/null || die "python3 not found: install Python 3 (3.9 or newer) to run the DynamoDB tests"
    mkdir -p "$STATE"
    echo "moto.sh: installing moto[server]==$MOTO_VERSION into $VENV" >&2
    if [[ ! -x "$VENV/bin/python" ]]; then
        python3 -m venv "$VENV" ||
            die "could not create a Python venv at $VENV (on Debian/Ubuntu: apt-get install python3-venv)"
    fi
    "$VENV/bin/python" -m pip install --quiet --disable-pip-version-check "moto[server]==$MOTO_VERSION" ||
        die "pip could not install moto[server]==$MOTO_VERSION into $VENV (is the Python package index reachable?)"
    [[ -x "$VENV/bin/moto_server" ]] || die "moto installed but $VENV/bin/moto_server is missing"
}

free_port() {
    "$VENV/bin/python" -c '
import socket
s = socket.socket()
s.bind(("127.0.0.1", 0))
print(s.getsockname()[1])
s.close()'
}

# True when a DynamoDB ListTables call gets a JSON answer from the server.
answers() {
    "$VENV/bin/python" - "$1" <<'PY' 2>/dev/null
import sys, urllib.request
req = urllib.request.Request(
    sys.argv[1] + "/",
    data=b"{}",
    method="POST",
    headers={
        "Content-Type": "application/x-amz-json-1.0",
        "X-Amz-Target": "DynamoDB_20120810.ListTables",
        "Authorization": "AWS4-HMAC-SHA256 Credential=test/20240101/us-east-1/dynamodb/aws4_request, SignedHeaders=host, Signature=0",
    },
)
with urllib.request.urlopen(req, timeout=2) as r:
    sys.exit(0 if b"TableNames" in r.read() else 1)
PY
}

start() {
    if pid="$(running_pid)"; then
        local endpoint
        endpoint="$(cat "$ENDPOINT_FILE" 2>/dev/null || true)"
        if [[ -n "$endpoint" ]] && answers "$endpoint"; then
            echo "moto.sh: already running (pid $pid) at $endpoint" >&2
            echo "$endpoint"
            return 0
        fi
        kill "$pid" 2>/dev/null || true
    fi
    rm -f "$PID_FILE" "$ENDPOINT_FILE"
    install_moto

    # A port picked free may be taken before moto binds it: try a few.
    local attempt port endpoint pid deadline
    for attempt in 1 2 3; do
        port="$(free_port)" || die "could not find a free port on 127.0.0.1"
        endpoint="http://127.0.0.1:$port"
        # setsid: the server outlives this script and gets its own process group.
        : >"$LOG_FILE"
        setsid "$VENV/bin/moto_server" -H 127.0.0.1 -p "$port" >>"$LOG_FILE" 2>&1 </dev/null &
        pid=$!
        deadline=$((SECONDS + WAIT_SECONDS))
        while ((SECONDS < deadline)); do
            if ! kill -0 "$pid" 2>/dev/null; then
                break
            fi
            if answers "$endpoint"; then
                echo "$pid" >"$PID_FILE"
                echo "$endpoint" >"$ENDPOINT_FILE"
                echo "moto.sh: moto $MOTO_VERSION (pid $pid) answers at $endpoint" >&2
                echo "$endpoint"
                return 0
            fi
            sleep 0.3
        done
        if kill -0 "$pid" 2>/dev/null; then
            kill "$pid" 2>/dev/null || true
            die "moto_server did not answer at $endpoint within ${WAIT_SECONDS}s; its log ($LOG_FILE):
$(tail -n 20 "$LOG_FILE")"
        fi
        echo "moto.sh: moto_server exited at start (attempt $attempt); log:" >&2
        tail -n 20 "$LOG_FILE" >&2 || true
    done
    die "moto_server would not start; see $LOG_FILE"
}

stop() {
    local pid
    if pid="$(running_pid)"; then
        kill "$pid" 2>/dev/null || true
        for _ in $(seq 1 50); do
            kill -0 "$pid" 2>/dev/null || break
            sleep 0.1
        done
        if kill -0 "$pid" 2>/dev/null; then
            kill -9 "$pid" 2>/dev/null || true
        fi
        echo "moto.sh: stopped moto (pid $pid)" >&2
    else
        echo "moto.sh: not running" >&2
    fi
    rm -f "$PID_FILE" "$ENDPOINT_FILE"
}

status() {
    local pid
    pid="$(running_pid)" || die "not running"
    echo "$(cat "$ENDPOINT_FILE") (pid $pid)"
}

case "${1:-}" in
start) start ;;
stop) stop ;;
status) status ;;
*)
    echo "usage: $0 start|stop|status" >&2
    exit 2
    ;;
esac
