package coap

import (
	"bytes"
	"context"
	"sync"
	"testing"
	"time"

	"github.com/plgd-dev/go-coap/v3/message"
	"github.com/plgd-dev/go-coap/v3/message/codes"
	"github.com/plgd-dev/go-coap/v3/udp"

	"github.com/sluicehq/sluice"
	"github.com/sluicehq/sluice/ingest"
)

// recorder is a Handler that keeps what it is given.
type recorder struct {
	mu   sync.Mutex
	msgs []*sluice.Message
}

var _ ingest.Handler = (*recorder)(nil)

func (r *recorder) Handle(_ context.Context, msg *sluice.Message, _ bool) error {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.msgs = append(r.msgs, msg)
	return nil
}

// TestMessageFields checks the message a request becomes: QoS 1 for
// confirmable and 0 for non-confirmable, the Content-Format as a media type,
// and the client's address as its client id when it has no identity.
func TestMessageFields(t *testing.T) {
	rec := &recorder{}
	src, err := New(Config{Address: "127.0.0.1:0", AllowAnonymous: true}, Options{Handler: rec})
	if err != nil {
		t.Fatal(err)
	}
	if err := src.Start(context.Background()); err != nil {
		t.Fatal(err)
	}
	defer src.Close(context.Background())
	cc, err := udp.Dial(src.Addr())
	if err != nil {
		t.Fatal(err)
	}
	defer cc.Close()

	for _, tc := range []struct {
		typ  message.Type
		cf   message.MediaType
		qos  byte
		want string
	}{
		{message.Confirmable, message.AppJSON, 1, "application/json"},
		{message.NonConfirmable, message.AppCBOR, 0, "application/cbor"},
		{message.Confirmable, message.TextPlain, 1, "text/plain; charset=utf-8"},
		{message.Confirmable, message.AppOctets, 1, "application/octet-stream"},
		{message.Confirmable, message.MediaType(65000), 1, ""},
	} {
		ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
		req, err := cc.NewPutRequest(ctx, "/ps/a/b", tc.cf, bytes.NewReader([]byte("x")))
		if err != nil {
			t.Fatal(err)
		}
		req.SetType(tc.typ)
		resp, err := cc.Do(req)
		cancel()
		if err != nil {
			t.Fatal(err)
		}
		if resp.Code() != codes.Changed {
			t.Fatalf("PUT: %v", resp.Code())
		}
		rec.mu.Lock()
		m := rec.msgs[len(rec.msgs)-1]
		rec.mu.Unlock()
		if m.Topic != "a/b" || string(m.Payload) != "x" || m.QoS != tc.qos || m.ContentType != tc.want ||
			m.Username != "" || m.ClientID != cc.LocalAddr().String() || m.Received.IsZero() {
			t.Errorf("%v %v: got %+v", tc.typ, tc.cf, m)
		}
	}
}
