package natsauth

import (
	"testing"

	"github.com/nats-io/nats.go"
	"github.com/stretchr/testify/require"
)

// TestOptions: each set field becomes its option, applied to nats.Options;
// empty fields add nothing.
func TestOptions(t *testing.T) {
	require.Empty(t, Credentials{}.Options())
	var o nats.Options
	for _, opt := range (Credentials{User: "u", Password: "p", Token: "tok"}).Options() {
		require.NoError(t, opt(&o))
	}
	require.Equal(t, "u", o.User)
	require.Equal(t, "p", o.Password)
	require.Equal(t, "tok", o.Token)
	require.Len(t, Credentials{Creds: "c", TLSCA: "ca", TLSCert: "cert", TLSKey: "key"}.Options(), 3)
}
