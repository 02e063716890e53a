#!/usr/bin/env bash
# Runs every benchmark scenario and writes docs/bench/: the tables (*.txt), the JSON lines
# (*.jsonl) and the charts (*.svg). SQLite: every scenario. PostgreSQL (if it answers on
# 127.0.0.1:5432): steady and latency on one node, steady on two nodes.
set -euo pipefail
cd "$(dirname "$0")/.."
out=docs/bench
mkdir -p "$out"
cargo build --release -p codmir -p codmir-bench
bench=target/release/codmir-bench

"$bench" --out "$out" "$@" | tee "$out/results-sqlite.txt"

pg=postgres://postgres@127.0.0.1:5432
if pg_isready -h 127.0.0.1 -p 5432 -q 2>/dev/null; then
    "$bench" --database "$pg" --scenario steady --scenario latency --events 20000 --out "$out" \
        | tee "$out/results-postgresx1.txt"
    "$bench" --database "$pg" --nodes 2 --scenario steady --scenario latency --events 20000 --out "$out" \
        | tee "$out/results-postgresx2.txt"
else
    echo "PostgreSQL is not answering on 127.0.0.1:5432: skipped its scenarios"
fi
