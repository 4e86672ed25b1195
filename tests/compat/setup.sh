#!/usr/bin/env bash
# Installs the clients of the compatibility matrix (idempotent; quick when already installed):
#   kcat (Debian package), confluent-kafka + kafka-python (pinned, into tests/compat/.venv),
#   kafkajs (pinned by kafkajs/package-lock.json, `npm ci`), the Go clients franz-go and Sarama (pinned
#   by go/go.mod + go/go.sum, built into go/bin; `go build` is a quick no-op when up to date), and
#   Sarama 1.22.1 (Debian 12's version; its own module, sarama122/go.mod + go.sum, built into
#   sarama122/bin; its zstd codec is cgo, so it needs the C compiler).
set -euo pipefail
HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)

as_root() {
    if [ "$(id -u)" -eq 0 ]; then "$@"; else sudo "$@"; fi
}

if ! command -v kcat >/dev/null 2>&1; then
    echo "compat setup: installing kcat"
    as_root apt-get update -qq
    as_root env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq kcat
fi

if [ ! -x "$HERE/.venv/bin/python" ]; then
    echo "compat setup: creating $HERE/.venv"
    python3 -m venv "$HERE/.venv"
fi
"$HERE/.venv/bin/python" -m pip install --quiet --disable-pip-version-check \
    -r "$HERE/requirements.txt"

if [ ! -f "$HERE/kafkajs/node_modules/kafkajs/package.json" ] ||
    [ "$HERE/kafkajs/package-lock.json" -nt "$HERE/kafkajs/node_modules/.package-lock.json" ]; then
    echo "compat setup: npm ci (kafkajs)"
    (cd "$HERE/kafkajs" && npm ci --no-audit --no-fund --loglevel=error)
fi

if ! command -v go >/dev/null 2>&1; then
    echo "compat setup: 'go' not found on PATH; Go 1.26+ is needed to build the franz-go and Sarama clients" >&2
    exit 1
fi
echo "compat setup: go build (franz-go, Sarama)"
(cd "$HERE/go" && go build -mod=readonly -buildvcs=false -trimpath -o bin/compat-go .)
echo "compat setup: go build (Sarama 1.22.1)"
(cd "$HERE/sarama122" && go build -mod=readonly -buildvcs=false -trimpath -o bin/compat-sarama122 .)
