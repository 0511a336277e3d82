package main

import (
	"crypto/tls"
	"errors"
	"fmt"
	"log/slog"

	"github.com/tcppro/tcppro/internal/tlsfiles"
)

// tlsFlagError names the flag behind a TLS file that could not be used:
// whatFlag maps tlsfiles.FileError.What to the flag.
func tlsFlagError(err error, whatFlag map[string]string) error {
	var fe *tlsfiles.FileError
	if errors.As(err, &fe) {
		if fe.What == tlsfiles.WhatPair {
			return fmt.Errorf("--tls-cert and --tls-key do not make a pair: %v", fe.Err)
		}
		if f, ok := whatFlag[fe.What]; ok {
			return fmt.Errorf("%s %s: %v", f, fe.Path, fe.Err)
		}
	}
	return err
}

// pairFlags says which flags to name for a certificate and key.
var pairFlags = map[string]string{
	tlsfiles.WhatCert: "--tls-cert",
	tlsfiles.WhatKey:  "--tls-key",
}

// checkPair reports a certificate given without its key or the reverse.
func checkPair(cert, key string) error {
	switch {
	case cert != "" && key == "":
		return errors.New("--tls-cert needs --tls-key (the certificate's private key)")
	case cert == "" && key != "":
		return errors.New("--tls-key needs --tls-cert (the certificate it belongs to)")
	}
	return nil
}

// serverTLS builds `tcppro serve`'s TLS configuration from its flags: nil
// (plain TCP) when none is given. The certificate is reloaded from its
// files when they change (at most one look per second, on a handshake);
// with a client CA, clients must present a certificate it signed.
func serverTLS(certFile, keyFile, clientCAFile string, log *slog.Logger) (*tls.Config, error) {
	if err := checkPair(certFile, keyFile); err != nil {
		return nil, err
	}
	if certFile == "" {
		if clientCAFile != "" {
			return nil, errors.New("--tls-client-ca needs --tls-cert and --tls-key (mutual TLS is TLS first)")
		}
		return nil, nil
	}
	pair, err := tlsfiles.LoadPair(certFile, keyFile, tlsfiles.Options{Logger: log})
	if err != nil {
		return nil, tlsFlagError(err, pairFlags)
	}
	cfg := &tls.Config{
		MinVersion:     tls.VersionTLS12,
		GetCertificate: pair.GetCertificate,
	}
	attrs := []any{"cert", certFile, "key", keyFile, "reload", "on change, checked at most every " + tlsfiles.DefaultCheckInterval.String()}
	if leaf := pair.Certificate().Leaf; leaf != nil {
		attrs = append(attrs, "subject", leaf.Subject.String(), "not_after", leaf.NotAfter.UTC())
	}
	if clientCAFile != "" {
		pool, err := tlsfiles.LoadCertPool(clientCAFile)
		if err != nil {
			return nil, tlsFlagError(err, map[string]string{tlsfiles.WhatCA: "--tls-client-ca"})
		}
		cfg.ClientCAs = pool
		cfg.ClientAuth = tls.RequireAndVerifyClientCert
		attrs = append(attrs, "client_ca", clientCAFile, "client_auth", "required")
	}
	log.Info("tls", attrs...)
	return cfg, nil
}

// clientTLS builds `tcppro call`'s TLS configuration from its flags: nil
// (plain TCP) unless on is set or another TLS flag is given. Without a CA
// file the system's roots are trusted.
func clientTLS(on bool, caFile, certFile, keyFile, serverName string) (*tls.Config, error) {
	if err := checkPair(certFile, keyFile); err != nil {
		return nil, err
	}
	if !on && caFile == "" && certFile == "" && serverName == "" {
		return nil, nil
	}
	cfg := &tls.Config{MinVersion: tls.VersionTLS12, ServerName: serverName}
	if caFile != "" {
		pool, err := tlsfiles.LoadCertPool(caFile)
		if err != nil {
			return nil, tlsFlagError(err, map[string]string{tlsfiles.WhatCA: "--tls-ca"})
		}
		cfg.RootCAs = pool
	}
	if certFile != "" {
		c, err := tlsfiles.LoadKeyPair(certFile, keyFile)
		if err != nil {
			return nil, tlsFlagError(err, pairFlags)
		}
		cfg.Certificates = []tls.Certificate{*c}
	}
	return cfg, nil
}
