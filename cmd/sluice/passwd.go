package main

import (
	"bufio"
	"bytes"
	"errors"
	"fmt"
	"io"
	"os"

	"golang.org/x/term"

	"github.com/sluicehq/sluice/ingest/auth"
	"github.com/sluicehq/sluice/internal/keyfile"
)

// stdin is where passwd reads a password; a variable for tests.
var stdin io.Reader = os.Stdin

// cmdPasswd adds, changes or deletes a user in a password file, in the
// spirit of mosquitto_passwd. The password is prompted for (twice, not
// echoed) on a terminal, and read as the first line of stdin otherwise, so
// scripts never put it on a command line.
func cmdPasswd(args []string, stdout, stderr io.Writer) int {
	fs := newFlags("passwd", stderr)
	del := fs.Bool("D", false, "delete the user")
	cost := fs.Int("cost", auth.DefaultCost, "bcrypt `cost` (each step doubles the time a check takes)")
	fs.Usage = func() {
		io.WriteString(stderr, `Usage: sluice passwd [-D] [-cost N] FILE USER

Sets USER's password in the password file FILE (created, mode 0600, if it
does not exist), or deletes USER with -D. The password is prompted for on a
terminal, or read from the first line of stdin:

  printf '%s\n' "$PASSWORD" | sluice passwd /etc/sluice/passwd device-0042

A running sluice picks the change up by itself.

`)
		fs.PrintDefaults()
	}
	if err := fs.Parse(args); err != nil {
		return usageExit(err)
	}
	if fs.NArg() != 2 {
		fs.Usage()
		return exitUsage
	}
	file, user := fs.Arg(0), fs.Arg(1)
	if err := auth.CheckUsername(user); err != nil {
		fmt.Fprintf(stderr, "sluice passwd: %v\n", err)
		return exitUsage
	}
	if *del {
		if err := auth.DeletePassword(file, user); err != nil {
			fmt.Fprintf(stderr, "sluice passwd: %v\n", err)
			return exitFailure
		}
		fmt.Fprintf(stdout, "%s: deleted %s\n", file, user)
		return exitOK
	}
	if *cost < 4 || *cost > 31 {
		fmt.Fprintf(stderr, "sluice passwd: -cost %d: want 4 to 31\n", *cost)
		return exitUsage
	}
	password, err := readPassword(stderr)
	if err != nil {
		fmt.Fprintf(stderr, "sluice passwd: %v\n", err)
		return exitUsage
	}
	if err := auth.SetPassword(file, user, password, *cost); err != nil {
		fmt.Fprintf(stderr, "sluice passwd: %v\n", err)
		return exitFailure
	}
	fmt.Fprintf(stdout, "%s: set the password of %s\n", file, user)
	return exitOK
}

func readPassword(prompt io.Writer) ([]byte, error) {
	if f, ok := stdin.(*os.File); ok && term.IsTerminal(int(f.Fd())) {
		fmt.Fprint(prompt, "Password: ")
		first, err := term.ReadPassword(int(f.Fd()))
		fmt.Fprintln(prompt)
		if err != nil {
			return nil, err
		}
		fmt.Fprint(prompt, "Password again: ")
		again, err := term.ReadPassword(int(f.Fd()))
		fmt.Fprintln(prompt)
		if err != nil {
			return nil, err
		}
		if !bytes.Equal(first, again) {
			return nil, errors.New("the passwords do not match")
		}
		return first, nil
	}
	line, err := bufio.NewReader(stdin).ReadBytes('\n')
	if err != nil && !errors.Is(err, io.EOF) {
		return nil, err
	}
	line = bytes.TrimRight(line, "\r\n")
	if len(line) == 0 {
		return nil, errors.New("no password on stdin")
	}
	return line, nil
}

// cmdKeygen writes a new random key for encryption at rest.
func cmdKeygen(args []string, stdout, stderr io.Writer) int {
	fs := newFlags("keygen", stderr)
	fs.Usage = func() {
		io.WriteString(stderr, `Usage: sluice keygen FILE

Writes a new random AES-256 key to FILE (64 hex digits, mode 0600) for
encryption.key_file. It never overwrites a file. Keep a copy somewhere
safe: without the key, encrypted journals and broker state cannot be read.
`)
	}
	if err := fs.Parse(args); err != nil {
		return usageExit(err)
	}
	if fs.NArg() != 1 {
		fs.Usage()
		return exitUsage
	}
	if err := keyfile.Generate(fs.Arg(0)); err != nil {
		fmt.Fprintf(stderr, "sluice keygen: %v\n", err)
		return exitFailure
	}
	fmt.Fprintf(stdout, "%s: new key written (mode 0600)\n", fs.Arg(0))
	return exitOK
}
