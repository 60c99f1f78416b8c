#!/usr/bin/env bash
# Signs a webhook with Standard Webhooks and POSTs it to the gateway.
# The signature is computed by openssl, not by this project's code:
#   base64(HMAC-SHA256(key, "{webhook-id}.{webhook-timestamp}.{body}"))
#
#   scripts/send-webhook.sh                 a sample contact.created event (fresh event id)
#   scripts/send-webhook.sh TYPE CONTACT_ID a sample event of TYPE (created|updated|deleted)
#   scripts/send-webhook.sh - < body.json   the body read from standard input, as is
#
# Environment: GATEWAY_URL (default http://127.0.0.1:8080/webhooks/acmecrm),
# WEBHOOK_SECRET (default: the development secret `make run` configures),
# TRACEPARENT (a W3C traceparent to send, as a traced AcmeCRM would).
set -euo pipefail
url=${GATEWAY_URL:-http://127.0.0.1:8080/webhooks/acmecrm}
secret=${WEBHOOK_SECRET:-whsec_YWNtZS1sb2NhbC1kZXYtc2VjcmV0LW5vdC1mb3ItcHJvZA==}

if [ "${1:-}" = "-" ]; then
  body=$(cat)
else
  type=contact.${1:-created}
  contact=${2:-1234}
  first=John; [ "$type" = contact.updated ] && first=Johnny
  body=$(printf '{"event_type":"%s","event_id":"evt_%s","timestamp":"%s","data":{"contact_id":"%s","acme_first_name":"%s","acme_last_name":"Doe","acme_email":"john.doe@example.com","acme_phone":"555-123-4567"}}' \
    "$type" "$(date +%s%N)" "$(date -u +%Y-%m-%dT%H:%M:%SZ)" "$contact" "$first")
fi

id="msg_$(date +%s%N)"
ts=$(date +%s)
hexkey=$(printf '%s' "${secret#whsec_}" | base64 -d | od -An -v -tx1 | tr -d ' \n')
sig=$(printf '%s.%s.%s' "$id" "$ts" "$body" | openssl dgst -sha256 -mac HMAC -macopt "hexkey:$hexkey" -binary | base64 -w0)

curl -sS -w '\nHTTP %{http_code}\n' -X POST "$url" \
  -H 'Content-Type: application/json' \
  -H "webhook-id: $id" -H "webhook-timestamp: $ts" -H "webhook-signature: v1,$sig" \
  ${TRACEPARENT:+-H "traceparent: $TRACEPARENT"} \
  --data-binary "$body"
