package main

import (
	"bytes"
	"context"
	"encoding/json"
	"flag"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"strings"

	"github.com/sluicehq/sluice/internal/admin"
	"github.com/sluicehq/sluice/pipelines"
)

// adminTarget is how a command finds a running sluice's admin listener:
// -admin and -token, or the config file's admin section (-c).
type adminTarget struct {
	fs     *flag.FlagSet
	addr   *string
	token  *string
	config *string
}

// adminFlags adds -admin, -token and -c/--config to fs.
func adminFlags(fs *flag.FlagSet) *adminTarget {
	a := &adminTarget{fs: fs}
	a.addr = fs.String("admin", "127.0.0.1:9880", "the admin listener's `address` (admin.address in the config)")
	a.token = fs.String("token", os.Getenv("SLUICE_ADMIN_TOKEN"), "bearer `token` if admin.token is set (default $SLUICE_ADMIN_TOKEN)")
	a.config = configFlag(fs)
	fs.Lookup("c").Usage = "find the admin listener (admin.address, admin.token) in this configuration `file`"
	return a
}

// client returns a client of the listener the flags name; call it after
// parsing. Flags given on the command line win over the config's values.
func (a *adminTarget) client() (adminClient, error) {
	if *a.config == "" {
		return adminClient{base: admin.BaseURL(*a.addr), token: *a.token}, nil
	}
	cfg, err := pipelines.Load(*a.config)
	if err != nil {
		return adminClient{}, err
	}
	return a.clientOf(cfg, *a.config)
}

// clientOf returns a client of the admin listener of cfg (read from path),
// or of the one -admin and -token name.
func (a *adminTarget) clientOf(cfg *pipelines.Config, path string) (adminClient, error) {
	set := map[string]bool{}
	a.fs.Visit(func(f *flag.Flag) { set[f.Name] = true })
	addr, token := *a.addr, *a.token
	fromAddr, fromToken, err := adminOf(cfg, path)
	if err != nil && !set["admin"] {
		return adminClient{}, err
	}
	if !set["admin"] {
		addr = fromAddr
	}
	if !set["token"] && fromToken != "" {
		token = fromToken
	}
	return adminClient{base: admin.BaseURL(addr), token: token}, nil
}

func adminOf(cfg *pipelines.Config, path string) (addr, token string, err error) {
	if cfg.Admin.Address == "" {
		return "", "", fmt.Errorf("%s has no admin.address: this command reads the admin listener; set one (docs/operations.md#the-admin-listener)", path)
	}
	host, port, err := net.SplitHostPort(cfg.Admin.Address)
	if err != nil {
		return "", "", err
	}
	switch host {
	case "", "0.0.0.0":
		host = "127.0.0.1"
	case "::":
		host = "::1"
	}
	if cfg.Admin.Token.IsSet() {
		token = cfg.Admin.Token.Reveal()
	}
	return net.JoinHostPort(host, port), token, nil
}

// adminClient calls a running sluice's admin API.
type adminClient struct{ base, token string }

// do sends a request and returns the response when its status is 200;
// otherwise an error saying what the server said.
func (c adminClient) do(ctx context.Context, method, path string, body any) (*http.Response, error) {
	var r io.Reader
	if body != nil {
		b, err := json.Marshal(body)
		if err != nil {
			return nil, err
		}
		r = bytes.NewReader(b)
	}
	req, err := http.NewRequestWithContext(ctx, method, c.base+path, r)
	if err != nil {
		return nil, err
	}
	if body != nil {
		req.Header.Set("Content-Type", "application/json")
	}
	if c.token != "" {
		req.Header.Set("Authorization", "Bearer "+c.token)
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return nil, fmt.Errorf("%w (is sluice running with admin.address set?)", err)
	}
	if resp.StatusCode != http.StatusOK {
		defer resp.Body.Close()
		b, _ := io.ReadAll(io.LimitReader(resp.Body, 4096))
		var e struct {
			Error string `json:"error"`
		}
		msg := strings.TrimSpace(string(b))
		if json.Unmarshal(b, &e) == nil && e.Error != "" {
			msg = e.Error
		}
		if resp.StatusCode == http.StatusNotFound && strings.HasPrefix(msg, "404 page not found") {
			msg = "this sluice has no console API (an older version?)"
		}
		return nil, fmt.Errorf("%s %s: %s: %s", method, c.base+path, resp.Status, msg)
	}
	return resp, nil
}

// call sends a request and decodes the JSON answer into out.
func (c adminClient) call(ctx context.Context, method, path string, body, out any) error {
	resp, err := c.do(ctx, method, path, body)
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	if err := json.NewDecoder(resp.Body).Decode(out); err != nil {
		return fmt.Errorf("%s %s: %w", method, c.base+path, err)
	}
	return nil
}
