#!/usr/bin/env bash
# Runs a command with the local Kafka broker up: starts it if this
# project's broker is not answering (on 9092, or on a free port when
# something else holds 9092: scripts/kafka.sh), and stops it afterwards
# only if this script started it. The command gets the broker's address:
# KAFKA_PORT, and KAFKA_BROKERS and KAFKA_TEST_BROKERS unless already set.
# The command's exit code is this script's.
set -uo pipefail
repo=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
kafka="$repo/scripts/kafka.sh"

started=0
if ! "$kafka" status 2>/dev/null; then
  "$kafka" up || exit 1
  started=1
fi
port=$("$kafka" port) || exit 1
export KAFKA_PORT=$port
export KAFKA_BROKERS=${KAFKA_BROKERS:-127.0.0.1:$port}
export KAFKA_TEST_BROKERS=${KAFKA_TEST_BROKERS:-127.0.0.1:$port}
"$@"
rc=$?
if [ "$started" = 1 ] && [ -z "${KEEP_KAFKA:-}" ]; then
  "$kafka" down
fi
exit $rc
