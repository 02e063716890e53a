#!/usr/bin/env bash
# Runs schemathesis (PyPI) over /openapi.json against a fresh `codmir serve`: every operation
# fuzzed with the API key, checking that no answer is a 5xx, that every status is documented
# and that every body matches its schema. Fixed seed, so a run is repeatable. Revoking a key
# is left out: schemathesis reuses ids it has seen in answers, so it would revoke the one key
# it runs with and meet only 401s after (tests/it/auth.rs covers revocation). Usage:
#   ./scripts/schemathesis.sh [path/to/codmir]      (default: target/debug/codmir, built)
set -euo pipefail
cd "$(dirname "$0")/.."
bin=${1:-}
if [ -z "$bin" ]; then
    cargo build -q -p codmir
    bin=target/debug/codmir
fi
venv=target/schemathesis-venv
if [ ! -x "$venv/bin/st" ]; then
    python3 -m venv "$venv"
    "$venv/bin/pip" install -q schemathesis==4.32.5
fi
dir=$(mktemp -d)
port=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
"$bin" serve --database-url "sqlite://$dir/st.db" --listen "127.0.0.1:$port" --api-rate-limit off --max-webhooks-per-workspace 1000000 \
    >"$dir/out" 2>"$dir/err" &
server=$!
trap 'kill $server 2>/dev/null; rm -rf "$dir"' EXIT
for _ in $(seq 1 50); do grep -q cmk_ "$dir/out" 2>/dev/null && break; sleep 0.1; done
key=$(grep cmk_ "$dir/out")
# One worker: with two, schemathesis's threads compile Python code at the same time, and
# Python 3.11's AST conversion keeps its recursion depth in state the threads share
# ("SystemError: AST constructor recursion depth mismatch" ended a CI run once).
"$venv/bin/st" run "http://127.0.0.1:$port/openapi.json" --header "Authorization: Bearer $key" \
    --checks not_a_server_error,status_code_conformance,response_schema_conformance \
    --exclude-operation-id revoke_key \
    --max-examples 30 --workers 1 --seed 1 --no-color
# A delivery that gives up is an ERROR line by design (the fuzzer registers receivers that
# do not exist and pings them); anything else at ERROR is a fault of the server.
errors=$(grep ' ERROR ' "$dir/err" | grep -v 'delivery::attempt: delivery failed' || true)
if [ -n "$errors" ]; then
    echo "the server logged errors:"; echo "$errors"; exit 1
fi
