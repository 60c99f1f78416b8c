#!/usr/bin/env bash
# Runs a command with the local Kafka broker up: starts it if it is not
# answering, and stops it afterwards only if this script started it.
# The command's exit code is this script's.
set -uo pipefail
repo=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
kafka="$repo/scripts/kafka.sh"

started=0
if ! "$kafka" status 2>/dev/null; then
  "$kafka" up || exit 1
  started=1
fi
"$@"
rc=$?
if [ "$started" = 1 ] && [ -z "${KEEP_KAFKA:-}" ]; then
  "$kafka" down
fi
exit $rc
