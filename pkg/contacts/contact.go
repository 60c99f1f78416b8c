package contacts

import (
	"time"

	"github.com/acmecrm/integration-service/pkg/acmecrm"
)

// Contact is a contact as the Contacts API stores it.
type Contact struct {
	AcmeContactID   string    `json:"acme_contact_id"`
	FirstName       string    `json:"first_name"`
	LastName        string    `json:"last_name"`
	Email           string    `json:"email"`
	Phone           string    `json:"phone"`
	SourceUpdatedAt time.Time `json:"source_updated_at"`
}

// FromEvent transforms an AcmeCRM event into the internal contact: the acme_
// prefixes dropped, the event's timestamp as source_updated_at. A field the
// event lacks (or sends as null) is empty.
func FromEvent(ev acmecrm.Event) Contact {
	return Contact{
		AcmeContactID:   ev.Data.ContactID,
		FirstName:       ev.Data.FirstName,
		LastName:        ev.Data.LastName,
		Email:           ev.Data.Email,
		Phone:           ev.Data.Phone,
		SourceUpdatedAt: ev.Timestamp,
	}
}
