// Package natsauth turns the NATS credentials that the node and the
// command-line tool accept (user and password, token, credentials file,
// TLS files) into nats.go connect options, so that both authenticate
// alike.
package natsauth

import "github.com/nats-io/nats.go"

// Credentials are the ways to authenticate to NATS servers. Empty fields
// are not used; validation (a Password needs a User, TLSCert needs TLSKey)
// is the caller's, which knows the names its user wrote.
type Credentials struct {
	User, Password string
	Token          string
	Creds          string // credentials file (JWT and NKey seed)
	TLSCA          string // CA certificate file of the servers
	TLSCert        string // client certificate file
	TLSKey         string // client key file
}

// Options returns the connect options of the set fields.
func (c Credentials) Options() []nats.Option {
	var opts []nats.Option
	if c.User != "" {
		opts = append(opts, nats.UserInfo(c.User, c.Password))
	}
	if c.Token != "" {
		opts = append(opts, nats.Token(c.Token))
	}
	if c.Creds != "" {
		opts = append(opts, nats.UserCredentials(c.Creds))
	}
	if c.TLSCA != "" {
		opts = append(opts, nats.RootCAs(c.TLSCA))
	}
	if c.TLSCert != "" {
		opts = append(opts, nats.ClientCert(c.TLSCert, c.TLSKey))
	}
	return opts
}
