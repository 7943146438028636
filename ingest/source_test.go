package ingest

import "testing"

func TestIsLoopback(t *testing.T) {
	for addr, want := range map[string]bool{
		"127.0.0.1:1883": true, "[::1]:5683": true, "localhost:8080": true, "localhost": true, "127.0.0.9": true,
		"0.0.0.0:1883": false, ":1883": false, "10.0.0.5:1883": false, "[::]:5683": false, "example.com:80": false, "": false,
	} {
		if got := IsLoopback(addr); got != want {
			t.Errorf("IsLoopback(%q) = %v, want %v", addr, got, want)
		}
	}
}
