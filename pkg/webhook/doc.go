// Package webhook provides Standard Webhooks (https://www.standardwebhooks.com)
// signature verification and signing: HMAC-SHA256 over
// "{webhook-id}.{webhook-timestamp}.{body}", sent as space-separated
// "v1,<base64>" entries in the webhook-signature header, with whsec_ secrets.
package webhook
