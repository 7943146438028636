package ingest

import (
	"bytes"

	mqtt "github.com/mochi-mqtt/server/v2"
	"github.com/mochi-mqtt/server/v2/packets"
)

// A session belongs to the identity that made it: the username the hook
// gave its client (a user from the password file, a client certificate's
// identity, or none for an anonymous client). mochi keeps a session, online
// or not, under its client id, with that username; the broker state stores
// the username with the session (stateStore.putClient), so the owner
// survives a restart.
//
// Another identity connecting with the client id would, by MQTT's rules,
// take the session over: resume it (and receive the messages queued for
// the owner) or, asking for a clean one, end it (and disconnect the owner,
// whose queued messages are lost). Neither is allowed: checkOwner refuses
// the CONNECT as not authorized. The owner's session stays as it was, and
// ends as any session does (its expiry, or a clean start by the owner).
//
// As a second line, every message a resumed session resends is checked
// against the ACL for the connecting client, as every delivery is (mochi's
// ResendInflightMessages asks OnACLCheck, a change in sluice's copy): the
// ACL may have changed while the message waited.

// checkOwner refuses cl when its client id names a session another
// identity owns. Anonymous clients are one identity: one may resume
// another's session (they cannot be told apart).
func (h *hook) checkOwner(cl *mqtt.Client) error {
	existing, ok := h.b.server.Clients.Get(cl.ID)
	if !ok || bytes.Equal(existing.Properties.Username, cl.Properties.Username) {
		return nil
	}
	return h.refuse(cl, "session", packets.ErrNotAuthorized, packets.Err3NotAuthorized,
		"user", string(cl.Properties.Username), "owner", string(existing.Properties.Username),
		"why", "the client id is the session of another user")
}
