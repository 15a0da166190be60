package limiter

import (
	"errors"
	"testing"

	"github.com/stretchr/testify/require"
)

func TestLimitsValidate(t *testing.T) {
	t.Parallel()
	tests := []struct {
		lim   Limits
		field string
	}{
		{Limits{ConnectionsPerMinute: -1}, "ConnectionsPerMinute"},
		{Limits{ConnectionBurst: 3}, "ConnectionBurst"},
		{Limits{MessagesPerMinute: 5, MessageBurst: -2}, "MessageBurst"},
		{Limits{BytesPerMinute: -100}, "BytesPerMinute"},
		{Limits{ByteBurst: 10}, "ByteBurst"},
		{Limits{MaxConcurrentConnections: -1}, "MaxConcurrentConnections"},
		{Limits{MaxMessageSize: -1}, "MaxMessageSize"},
		{Limits{MessageScope: 7}, "MessageScope"},
		{Limits{BytesPerMinute: 1000, MaxMessageSize: 2000}, "MaxMessageSize"},
		{Limits{BytesPerMinute: 1000, ByteBurst: 4000, MaxMessageSize: 5000}, "MaxMessageSize"},
	}
	for _, tt := range tests {
		err := tt.lim.Validate()
		var fe *FieldError
		require.ErrorAs(t, err, &fe, "%+v", tt.lim)
		require.Equal(t, tt.field, fe.Field, "%+v", tt.lim)
		require.True(t, errors.Is(err, ErrInvalidLimits))
		require.Contains(t, err.Error(), tt.field)
	}
	for _, name := range []string{"default", "strict", "moderate", "generous"} {
		lim, ok := Preset(name)
		require.True(t, ok)
		require.NoError(t, lim.Validate(), name)
	}
	_, ok := Preset("lenient")
	require.False(t, ok)
	require.NoError(t, Limits{}.Validate())
	require.NoError(t, Limits{BytesPerMinute: 1000, ByteBurst: 4000, MaxMessageSize: 4000}.Validate())
}

func TestPresetsCarryTheSeedValues(t *testing.T) {
	t.Parallel()
	require.Equal(t, Limits{ConnectionsPerMinute: 5, MessagesPerMinute: 50, BytesPerMinute: 102400,
		MaxConcurrentConnections: 2, MaxMessageSize: 1024}, Strict())
	require.Equal(t, Limits{ConnectionsPerMinute: 10, MessagesPerMinute: 100, BytesPerMinute: 1048576,
		MaxConcurrentConnections: 5, MaxMessageSize: 10240}, Moderate())
	require.Equal(t, Limits{ConnectionsPerMinute: 50, MessagesPerMinute: 1000, BytesPerMinute: 10485760,
		MaxConcurrentConnections: 20, MaxMessageSize: 65536}, Generous())
	require.Equal(t, Limits{ConnectionsPerMinute: 60, MessagesPerMinute: 1000,
		MaxConcurrentConnections: 10, MaxMessageSize: 65536}, DefaultLimits())
}
