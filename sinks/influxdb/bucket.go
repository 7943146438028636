package influxdb

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"net/url"
	"regexp"
	"strings"

	influxdb2 "github.com/influxdata/influxdb-client-go/v2"
	http2 "github.com/influxdata/influxdb-client-go/v2/api/http"
)

// What InfluxDB says of a write to a bucket that is not there: 1.x
// `database not found: "db"` (404) and `retention policy not found: rp`
// (500), 2.x `bucket "b" not found` (404).
var (
	reNoDatabase = regexp.MustCompile(`database not found: "?([^"]*)"?`)
	reNoRP       = regexp.MustCompile(`retention policy not found: "?([^"]*)"?`)
	reNoBucket   = regexp.MustCompile(`bucket "?([^"]*)"? not found`)
)

// checkBucket writes nothing to the bucket, which InfluxDB answers with
// what it would answer a write: whether the database (1.x) or bucket (2.x)
// is there. With create, a missing 1.x database is created.
func (s *Sink) checkBucket(ctx context.Context, client influxdb2.Client) error {
	err := s.probe(ctx, client)
	if err != nil && s.cfg.Create && missingDatabase(err) != "" {
		if cerr := s.createDatabase(ctx, client, missingDatabase(err)); cerr != nil {
			return cerr
		}
		err = s.probe(ctx, client)
	}
	if err != nil {
		return s.explain(err)
	}
	return nil
}

func (s *Sink) probe(ctx context.Context, client influxdb2.Client) error {
	svc := client.HTTPService()
	u := svc.ServerAPIURL() + "write?" + url.Values{"org": {s.cfg.Org}, "bucket": {s.cfg.Bucket}}.Encode()
	if herr := svc.DoPostRequest(ctx, u, strings.NewReader(""), func(req *http.Request) {
		req.Header.Set("Content-Type", "text/plain; charset=utf-8")
	}, func(*http.Response) error { return nil }); herr != nil {
		return herr
	}
	return nil
}

// missingDatabase is the database a write error says does not exist, or "".
func missingDatabase(err error) string {
	var he *http2.Error
	if !errors.As(err, &he) || he.StatusCode != http.StatusNotFound {
		return ""
	}
	if m := reNoDatabase.FindStringSubmatch(he.Message); m != nil {
		return m[1]
	}
	return ""
}

// createDatabase creates a 1.x database (CREATE DATABASE is idempotent).
// InfluxDB 2.x has no such statement: there the bucket is made with the
// influx CLI or the UI.
func (s *Sink) createDatabase(ctx context.Context, client influxdb2.Client, db string) error {
	svc := client.HTTPService()
	q := url.Values{"q": {fmt.Sprintf("CREATE DATABASE %q", db)}}
	var body []byte
	herr := svc.DoPostRequest(ctx, strings.TrimSuffix(svc.ServerURL(), "/")+"/query", strings.NewReader(q.Encode()), func(req *http.Request) {
		req.Header.Set("Content-Type", "application/x-www-form-urlencoded")
	}, func(resp *http.Response) error {
		b := make([]byte, 512)
		n, _ := resp.Body.Read(b)
		body = b[:n]
		return nil
	})
	if herr != nil {
		return fmt.Errorf("create: true: could not create database %q (InfluxDB 1.x creates it; with 2.x, make the bucket with influx bucket create): %w", db, herr)
	}
	if strings.Contains(string(body), `"error"`) {
		return fmt.Errorf("create: true: could not create database %q: %s", db, strings.TrimSpace(string(body)))
	}
	return nil
}

// explainMissing says, of a write refused because the bucket is not there,
// what is missing and how to make it; nil for other errors.
func (s *Sink) explainMissing(err error) error {
	var he *http2.Error
	if !errors.As(err, &he) {
		return nil
	}
	wait := "its events wait in the journal meanwhile"
	switch m := reNoDatabase.FindStringSubmatch(he.Message); {
	case m != nil && he.StatusCode == http.StatusNotFound:
		return fmt.Errorf("InfluxDB has no database %q (bucket %q): create it (CREATE DATABASE %q, with influx -execute or POST %s/query), or set create: true on this sink; %s: %w",
			m[1], s.cfg.Bucket, m[1], strings.TrimSuffix(s.cfg.URL, "/"), wait, err)
	}
	if m := reNoRP.FindStringSubmatch(he.Message); m != nil {
		db, _, _ := strings.Cut(s.cfg.Bucket, "/")
		return fmt.Errorf("InfluxDB database %q has no retention policy %q (bucket %q): create it (CREATE RETENTION POLICY %q ON %q DURATION 30d REPLICATION 1), or write to %q; %s: %w",
			db, m[1], s.cfg.Bucket, m[1], db, db+"/autogen", wait, err)
	}
	if m := reNoBucket.FindStringSubmatch(he.Message); m != nil && he.StatusCode == http.StatusNotFound {
		return fmt.Errorf("InfluxDB has no bucket %q in org %q: create it (influx bucket create --name %s --org %s); %s: %w",
			m[1], s.cfg.Org, m[1], s.cfg.Org, wait, err)
	}
	return nil
}
