// Package tlsfiles loads TLS certificates, keys and CA pools from PEM files,
// and keeps a certificate current as its files are replaced on disk, so that
// a server renews its certificate without a restart.
//
//	pair, err := tlsfiles.LoadPair("server.crt", "server.key", tlsfiles.Options{Logger: log})
//	cfg := &tls.Config{GetCertificate: pair.GetCertificate}
//
// A Pair checks its files at most once per CheckInterval (default 1 s), on a
// handshake: two stat calls. When either file's modification time, size or
// inode has changed, it loads the pair again; if that fails (a half-written
// file, a key that does not match), it keeps serving the certificate it had,
// logs why, and tries again when the files next change. Renaming a new file
// over the old one, as certificate tools and Kubernetes secret volumes do, is
// seen as a change.
package tlsfiles

import (
	"crypto/tls"
	"crypto/x509"
	"encoding/pem"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"time"
)

// DefaultCheckInterval is how often, at most, a Pair looks at its files.
const DefaultCheckInterval = time.Second

// What a FileError is about.
const (
	WhatCert = "certificate"
	WhatKey  = "key"
	WhatCA   = "CA"
	WhatPair = "certificate and key"
)

// FileError reports a file that could not be used, and which file it is.
type FileError struct {
	// What is WhatCert, WhatKey, WhatCA, or WhatPair when the two files
	// are each readable but do not make a pair (the key does not match).
	What string
	// Path is the file (for WhatPair, the certificate's).
	Path string
	Err  error
}

func (e *FileError) Error() string { return fmt.Sprintf("tls %s %s: %v", e.What, e.Path, e.Err) }
func (e *FileError) Unwrap() error { return e.Err }

// ErrNoPEM is wrapped by a FileError for a file that holds no PEM block of
// the expected type.
var ErrNoPEM = errors.New("no PEM block of the expected type")

// LoadCertPool reads a PEM file of one or more CA certificates into a pool.
func LoadCertPool(file string) (*x509.CertPool, error) {
	b, err := os.ReadFile(file)
	if err != nil {
		return nil, &FileError{What: WhatCA, Path: file, Err: err}
	}
	pool := x509.NewCertPool()
	n := 0
	for rest := b; ; {
		var blk *pem.Block
		blk, rest = pem.Decode(rest)
		if blk == nil {
			break
		}
		if blk.Type != "CERTIFICATE" {
			continue
		}
		c, err := x509.ParseCertificate(blk.Bytes)
		if err != nil {
			return nil, &FileError{What: WhatCA, Path: file, Err: fmt.Errorf("certificate %d: %w", n+1, err)}
		}
		pool.AddCert(c)
		n++
	}
	if n == 0 {
		return nil, &FileError{What: WhatCA, Path: file, Err: fmt.Errorf("%w (want CERTIFICATE)", ErrNoPEM)}
	}
	return pool, nil
}

// LoadKeyPair reads a certificate (with its chain) and its private key from
// PEM files. The error is a *FileError naming the file at fault.
func LoadKeyPair(certFile, keyFile string) (*tls.Certificate, error) {
	certPEM, err := os.ReadFile(certFile)
	if err != nil {
		return nil, &FileError{What: WhatCert, Path: certFile, Err: err}
	}
	if !hasBlock(certPEM, func(t string) bool { return t == "CERTIFICATE" }) {
		return nil, &FileError{What: WhatCert, Path: certFile, Err: fmt.Errorf("%w (want CERTIFICATE)", ErrNoPEM)}
	}
	keyPEM, err := os.ReadFile(keyFile)
	if err != nil {
		return nil, &FileError{What: WhatKey, Path: keyFile, Err: err}
	}
	if !hasBlock(keyPEM, func(t string) bool { return strings.HasSuffix(t, "PRIVATE KEY") }) {
		return nil, &FileError{What: WhatKey, Path: keyFile, Err: fmt.Errorf("%w (want PRIVATE KEY)", ErrNoPEM)}
	}
	c, err := tls.X509KeyPair(certPEM, keyPEM)
	if err != nil {
		return nil, &FileError{What: WhatPair, Path: certFile, Err: err}
	}
	return &c, nil
}

func hasBlock(b []byte, ok func(string) bool) bool {
	for {
		var blk *pem.Block
		blk, b = pem.Decode(b)
		if blk == nil {
			return false
		}
		if ok(blk.Type) {
			return true
		}
	}
}

// Options configure a Pair.
type Options struct {
	// CheckInterval is how often, at most, the files are looked at (on a
	// handshake). Default DefaultCheckInterval (1 s); negative: never
	// (the pair is loaded once).
	CheckInterval time.Duration
	// Logger receives a line for each reload and each failed one. Default
	// slog.Default().
	Logger *slog.Logger
}

// Pair is a certificate and key loaded from two files, reloaded when they
// change. Its methods are safe for concurrent use.
type Pair struct {
	certFile, keyFile string
	interval          time.Duration
	log               *slog.Logger
	now               func() time.Time // the clock; tests replace it

	cur       atomic.Pointer[tls.Certificate]
	nextCheck atomic.Int64 // unix nanoseconds of the next look at the files

	mu   sync.Mutex // held by the one goroutine looking at the files
	seen [2]fileStamp
}

// fileStamp is what identifies a version of a file.
type fileStamp struct {
	mtime int64
	size  int64
	dev   uint64
	ino   uint64
	err   string // the stat error, if any
}

func stamp(path string) fileStamp {
	fi, err := os.Stat(path)
	if err != nil {
		return fileStamp{err: err.Error()}
	}
	s := fileStamp{mtime: fi.ModTime().UnixNano(), size: fi.Size()}
	if st, ok := fi.Sys().(*syscall.Stat_t); ok {
		s.dev, s.ino = uint64(st.Dev), st.Ino
	}
	return s
}

// LoadPair loads the certificate and key from their PEM files. The error
// is a *FileError naming the file at fault.
func LoadPair(certFile, keyFile string, opts Options) (*Pair, error) {
	p := &Pair{certFile: certFile, keyFile: keyFile, interval: opts.CheckInterval, log: opts.Logger, now: time.Now}
	if p.interval == 0 {
		p.interval = DefaultCheckInterval
	}
	if p.log == nil {
		p.log = slog.Default()
	}
	// Stamps first: a file replaced while it is read is seen as changed
	// at the next look.
	p.seen = [2]fileStamp{stamp(certFile), stamp(keyFile)}
	c, err := LoadKeyPair(certFile, keyFile)
	if err != nil {
		return nil, err
	}
	p.cur.Store(c)
	p.nextCheck.Store(p.now().Add(p.interval).UnixNano())
	return p, nil
}

// Certificate returns the current certificate, after looking at the files
// if CheckInterval has passed since the last look.
func (p *Pair) Certificate() *tls.Certificate {
	if p.interval > 0 && p.now().UnixNano() >= p.nextCheck.Load() && p.mu.TryLock() {
		// One goroutine looks; handshakes meanwhile use the current pair.
		p.check()
		p.mu.Unlock()
	}
	return p.cur.Load()
}

// GetCertificate is for tls.Config.GetCertificate (servers).
func (p *Pair) GetCertificate(*tls.ClientHelloInfo) (*tls.Certificate, error) {
	return p.Certificate(), nil
}

// GetClientCertificate is for tls.Config.GetClientCertificate (clients
// presenting a certificate for mutual TLS).
func (p *Pair) GetClientCertificate(*tls.CertificateRequestInfo) (*tls.Certificate, error) {
	return p.Certificate(), nil
}

// check looks at the files and reloads them if they changed; p.mu is held.
func (p *Pair) check() {
	p.nextCheck.Store(p.now().Add(p.interval).UnixNano())
	now := [2]fileStamp{stamp(p.certFile), stamp(p.keyFile)}
	if now == p.seen {
		return
	}
	// Whatever the outcome, this version is not tried again: a failure is
	// logged once, and the next change is tried afresh.
	p.seen = now
	c, err := LoadKeyPair(p.certFile, p.keyFile)
	if err != nil {
		p.log.Warn("tls: the certificate files changed but cannot be loaded; keeping the current certificate",
			"cert", p.certFile, "key", p.keyFile, "err", err)
		return
	}
	p.cur.Store(c)
	attrs := []any{"cert", p.certFile, "key", p.keyFile}
	if leaf := c.Leaf; leaf != nil {
		attrs = append(attrs, "subject", leaf.Subject.String(), "serial", leaf.SerialNumber.String(), "not_after", leaf.NotAfter.UTC())
	}
	p.log.Info("tls: certificate reloaded", attrs...)
}
