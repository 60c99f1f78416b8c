// Package acmecrm provides AcmeCRM's contact event, as its webhooks send it,
// and the rules a webhook body must keep to be accepted.
package acmecrm
