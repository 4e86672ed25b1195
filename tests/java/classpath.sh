#!/usr/bin/env bash
# Prints the classpath of the JVM tests (run setup.sh first).
set -euo pipefail
HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
printf '%s:%s\n' "$HERE/target/classes" "$(cat "$HERE/target/classpath.txt")"
