#!/bin/sh
# Installs what the benchmark needs, builds berth (release), runs the
# benchmark: bench/run.sh [--quick] [berth-bench options]
set -eu
cd "$(dirname "$0")/.."

missing=""
command -v docker-registry >/dev/null 2>&1 || missing="$missing docker-registry"
command -v htpasswd >/dev/null 2>&1 || missing="$missing apache2-utils"
command -v caddy >/dev/null 2>&1 || missing="$missing caddy"
if [ -n "$missing" ]; then
    echo "run.sh: installing$missing"
    if [ "$(id -u)" -eq 0 ]; then sudo=""; else sudo="sudo"; fi
    $sudo apt-get update -q
    DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -q $missing
fi

target="${CARGO_TARGET_DIR:-$PWD/target}"
cargo build --release --bin berth
exec cargo run --release -p berth-bench -- --berth "$target/release/berth" "$@"
