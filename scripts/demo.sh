#!/usr/bin/env bash
# make demo: while `make run` runs, sends a contact through its life
# (created, updated, deleted) and one event the stand-in rejects, then shows
# what the Contacts API stand-in holds and what reached the dead-letter topic.
set -euo pipefail
repo=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$repo"
standin=http://${STANDIN_ADDR:-127.0.0.1:8090}
brokers=${KAFKA_BROKERS:-127.0.0.1:$(scripts/kafka.sh port 2>/dev/null || echo 9092)} # the broker `make run` uses
curl -fsS "http://${GATEWAY_LISTEN_ADDR:-127.0.0.1:8080}/readyz" >/dev/null || { echo "demo: start \`make run\` first"; exit 1; }
command -v kcat >/dev/null || { echo "demo: installing kcat (Debian package)"; apt-get install -y -qq kcat >/dev/null; }

c="demo-$(date +%s)"
say() { printf '\n== %s\n' "$*"; }
say "contact.created for $c"; scripts/send-webhook.sh created "$c"
sleep 0.5; curl -sS "$standin/contacts/$c"; echo
say "contact.updated for $c"; scripts/send-webhook.sh updated "$c"
sleep 0.5; curl -sS "$standin/contacts/$c"; echo
say "contact.deleted for $c"; scripts/send-webhook.sh deleted "$c"
sleep 0.5; curl -sS -o /dev/null -w "GET /contacts/$c -> %{http_code}\n" "$standin/contacts/$c"
say "contact.created for reject-me (the stand-in answers 422: dead-lettered at once)"; scripts/send-webhook.sh created reject-me
sleep 1
say "the calls the stand-in received for $c"
curl -sS "$standin/_standin/calls" | tr '}' '\n' | grep "\"$c\"" | sed 's/,"body".*//; s/^[,[]*{//'
say "last record on contact-events-dlq (kcat -C -t contact-events-dlq -f '%h %s\\n')"
kcat -b "$brokers" -C -t contact-events-dlq -f '%h %s\n' -o -1 -e -q
