#!/usr/bin/env bash
# Installs the reference tokenizers: each model family's own tokenizer, which the tests use to
# check that prompts stay inside the family's token budget. Nothing here ships with the
# library, and the library never downloads anything at run time: these are test tools only.
#
#   scripts/reference-tokenizers.sh install   install everything (once; later runs skip what
#                                             is already there at the pinned versions) into
#                                             target/reference-tokenizers/:
#                                               venv/    Python: sentencepiece, tiktoken
#                                               models/  tokenizer files taken from the
#                                                        llama-models and mistral-common wheels
#                                               node/    llama-tokenizer-js, @anthropic-ai/tokenizer
#   scripts/reference-tokenizers.sh env       print RAG_TEST_REFERENCE_TOKENIZERS=<that directory>
#
# Then: RAG_TEST_REFERENCE_TOKENIZERS=... cargo test --test reference_tokenizers
# The tests run scripts/reference_tokenizers.py and scripts/reference_tokenizers.mjs as servers.
#
# Every failure exits non-zero with a message saying which step failed and why.
set -euo pipefail

SENTENCEPIECE_VERSION="0.2.1"
TIKTOKEN_VERSION="0.12.0"
LLAMA_MODELS_VERSION="0.3.0"
MISTRAL_COMMON_VERSION="1.13.1"
NODE_PACKAGES=("llama-tokenizer-js@1.2.2" "@anthropic-ai/tokenizer@0.0.4")

# The model files: path inside the wheel, where it goes under models/, and its sha256.
MODEL_FILES=(
    "llama_models/llama3/tokenizer.model llama3/tokenizer.model 82e9d31979e92ab929cd544440f129d9ecd797b69e327f80f17e1c50d5551b55"
    "llama_models/llama4/tokenizer.model llama4/tokenizer.model d0bdbaf59b0762c8c807617e2d8ea51420eb1b1de266df2495be755c8e0ed6ed"
    "mistral_common/data/tokenizer.model.v1 mistral-v1/tokenizer.model.v1 dadfd56d766715c61d2ef780a525ab43b8e6da4de6865bda3d95fdef5e134055"
)

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
DIR="${RAG_REFERENCE_TOKENIZERS_DIR:-$ROOT/target/reference-tokenizers}"
[[ "$DIR" == /* ]] || DIR="$PWD/$DIR"
VENV="$DIR/venv"
MODELS="$DIR/models"
NODE_DIR="$DIR/node"

die() {
    echo "reference-tokenizers.sh: $*" >&2
    exit 1
}

say() {
    echo "reference-tokenizers.sh: $*" >&2
}

# True when the stamp file $1 exists and holds exactly $2.
stamped() {
    [[ -f "$1" ]] && [[ "$(cat "$1")" == "$2" ]]
}

install_python() {
    local want="sentencepiece==$SENTENCEPIECE_VERSION tiktoken==$TIKTOKEN_VERSION"
    if stamped "$VENV/.installed" "$want" &&
        "$VENV/bin/python" -c "import sentencepiece, tiktoken" 2>/dev/null; then
        say "python: $want already installed"
        return 0
    fi
    command -v python3 >/dev/null || die "python3 not found: install Python 3 (3.9 or newer)"
    python3 -c 'import sys; sys.exit(sys.version_info < (3, 9))' ||
        die "python3 is $(python3 --version 2>&1); the reference tokenizers need 3.9 or newer"
    mkdir -p "$DIR"
    say "python: installing $want into $VENV"
    rm -f "$VENV/.installed"
    if [[ ! -x "$VENV/bin/python" ]]; then
        python3 -m venv "$VENV" ||
            die "could not create a Python venv at $VENV (on Debian/Ubuntu: apt-get install python3-venv)"
    fi
    # shellcheck disable=SC2086 # $want is two requirement specifiers
    "$VENV/bin/python" -m pip install --quiet --disable-pip-version-check $want ||
        die "pip could not install $want into $VENV (is the Python package index reachable?)"
    "$VENV/bin/python" -c "import sentencepiece, tiktoken" ||
        die "$want installed into $VENV but cannot be imported (see above)"
    echo "$want" >"$VENV/.installed"
}

# Prints the sha256 of file $1.
sha256() {
    "$VENV/bin/python" -c 'import hashlib, sys; print(hashlib.sha256(open(sys.argv[1], "rb").read()).hexdigest())' "$1"
}

# Checks every model file against its pinned sha256 (printing it); fails on the first mismatch.
verify_models() {
    local entry inner dest want got
    for entry in "${MODEL_FILES[@]}"; do
        read -r inner dest want <<<"$entry"
        [[ -f "$MODELS/$dest" ]] || return 1
        got="$(sha256 "$MODELS/$dest")"
        if [[ "$got" != "$want" ]]; then
            say "models: $MODELS/$dest has sha256 $got, expected $want"
            return 1
        fi
        say "models: $got  $dest"
    done
}

install_models() {
    local want="llama-models==$LLAMA_MODELS_VERSION mistral-common==$MISTRAL_COMMON_VERSION"
    if stamped "$MODELS/.installed" "$want" && verify_models; then
        say "models: from $want already extracted and verified"
        return 0
    fi
    say "models: extracting the tokenizer files of $want into $MODELS"
    rm -rf "$MODELS"
    mkdir -p "$MODELS"
    local wheels
    wheels="$(mktemp -d "$DIR/wheels.XXXXXX")"
    # shellcheck disable=SC2086 # $want is two requirement specifiers
    if ! "$VENV/bin/python" -m pip download --quiet --disable-pip-version-check --no-deps \
        --only-binary=:all: --dest "$wheels" $want; then
        rm -rf "$wheels"
        die "pip could not download the wheels of $want (is the Python package index reachable?)"
    fi
    local entry inner dest sha
    for entry in "${MODEL_FILES[@]}"; do
        read -r inner dest sha <<<"$entry"
        if ! "$VENV/bin/python" - "$wheels" "$inner" "$MODELS/$dest" <<'PY'; then
import glob, os, shutil, sys, zipfile
wheels, inner, dest = sys.argv[1:]
for wheel in sorted(glob.glob(os.path.join(wheels, "*.whl"))):
    with zipfile.ZipFile(wheel) as z:
        if inner in z.namelist():
            os.makedirs(os.path.dirname(dest), exist_ok=True)
            with z.open(inner) as src, open(dest, "wb") as out:
                shutil.copyfileobj(src, out)
            sys.exit(0)
sys.exit(f"{inner} is in none of the downloaded wheels: {os.listdir(wheels)}")
PY
            rm -rf "$wheels"
            die "could not extract $inner from the wheels of $want"
        fi
    done
    rm -rf "$wheels"
    verify_models || die "the tokenizer files extracted from $want are not the expected ones (see above)"
    echo "$want" >"$MODELS/.installed"
}

install_node() {
    local want="${NODE_PACKAGES[*]}"
    if stamped "$NODE_DIR/.installed" "$want" &&
        [[ -d "$NODE_DIR/node_modules/llama-tokenizer-js" ]] &&
        [[ -d "$NODE_DIR/node_modules/@anthropic-ai/tokenizer" ]]; then
        say "node: $want already installed"
        return 0
    fi
    command -v node >/dev/null || die "node not found: install Node.js 18 or newer (with npm)"
    command -v npm >/dev/null || die "npm not found: install npm (it comes with Node.js)"
    node -e 'process.exit(Number(process.versions.node.split(".")[0]) < 18 ? 1 : 0)' ||
        die "node is $(node --version); the reference tokenizers need Node.js 18 or newer"
    say "node: installing $want into $NODE_DIR"
    rm -rf "$NODE_DIR"
    mkdir -p "$NODE_DIR"
    # A package.json of its own, so npm installs here and not into a parent project.
    echo '{"private": true, "description": "reference tokenizers for the tests"}' >"$NODE_DIR/package.json"
    npm install --prefix "$NODE_DIR" --no-audit --no-fund --silent "${NODE_PACKAGES[@]}" ||
        die "npm could not install $want into $NODE_DIR (is the npm registry reachable?)"
    echo "$want" >"$NODE_DIR/.installed"
}

install() {
    local start=$SECONDS
    install_python
    install_models
    install_node
    say "installed in $DIR ($((SECONDS - start))s)"
}

case "${1:-}" in
install) install ;;
env) echo "RAG_TEST_REFERENCE_TOKENIZERS=$DIR" ;;
*)
    echo "usage: $0 install|env" >&2
    exit 2
    ;;
esac
