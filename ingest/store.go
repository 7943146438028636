package ingest

import (
	"strconv"
	"strings"

	"github.com/mochi-mqtt/server/v2/hooks/storage"
	"github.com/mochi-mqtt/server/v2/hooks/storage/bolt"
)

// boltStore is mochi's bolt storage hook with one repair. mochi v2.7.9's
// bolt hook saves the QoS 1/2 messages in flight to a subscriber without
// their packet id (its badger and pebble hooks do save it), so after a
// restart the broker cannot send them again ("missing packet id") and a
// persistent session loses them. The id is also the end of each record's
// key ("IFM_<client>:<id>"): restore it from there when loading.
type boltStore struct {
	*bolt.Hook
}

func (h *boltStore) StoredInflightMessages() ([]storage.Message, error) {
	msgs, err := h.Hook.StoredInflightMessages()
	for i := range msgs {
		if msgs[i].PacketID != 0 {
			continue
		}
		if j := strings.LastIndexByte(msgs[i].ID, ':'); j >= 0 {
			if id, perr := strconv.ParseUint(msgs[i].ID[j+1:], 10, 16); perr == nil {
				msgs[i].PacketID = uint16(id)
			}
		}
	}
	return msgs, err
}

// StoredSysInfo returns nothing: sluice does not restore the $SYS counters
// across restarts (they describe this run), and the bolt hook logs an error
// for the missing record on every first start.
func (h *boltStore) StoredSysInfo() (storage.SystemInfo, error) {
	return storage.SystemInfo{}, nil
}
