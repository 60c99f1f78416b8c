// Package contacts provides the client of the Contacts API, the internal
// contact it stores, the transform from AcmeCRM's event to it, and the
// classification of the API's failures as transient or permanent.
package contacts
