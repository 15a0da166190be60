package wshandler

import (
	"errors"
	"testing"
	"time"

	"github.com/ratethrottle/ratethrottle/pkg/limiter"
)

func TestConfigErrorsNameTheField(t *testing.T) {
	t.Parallel()
	cases := []struct {
		cfg   Config
		field string
	}{
		{Config{SendQueueSize: -1}, "SendQueueSize"},
		{Config{MaxRoomsPerConn: -1}, "MaxRoomsPerConn"},
		{Config{MaxRoomsPerNode: -2}, "MaxRoomsPerNode"},
		{Config{MaxRoomNameLength: 5000}, "MaxRoomNameLength"},
		{Config{DenialWindow: -time.Second}, "DenialWindow"},
		{Config{WriteTimeout: -1}, "WriteTimeout"},
		{Config{CloseTimeout: -1}, "CloseTimeout"},
		{Config{DefaultRoom: RoomLimits{MaxMembers: -1}}, "DefaultRoom.MaxMembers"},
		{Config{DefaultRoom: RoomLimits{MessageBurst: 3}}, "DefaultRoom.MessageBurst"},
		{Config{Rooms: map[string]RoomLimits{"a": {MemberMessageBurst: 2}}}, `Rooms["a"].MemberMessageBurst`},
		{Config{Rooms: map[string]RoomLimits{"": {}}}, `Rooms[""]`},
		{Config{RoomPatterns: []RoomPattern{{Pattern: ""}}}, "RoomPatterns[0].Pattern"},
		{Config{RoomPatterns: []RoomPattern{{Pattern: "g-*", Limits: RoomLimits{MaxMessageSize: -5}}}}, "RoomPatterns[0].Limits.MaxMessageSize"},
	}
	for _, tc := range cases {
		_, err := New(tc.cfg)
		var fe *limiter.FieldError
		if !errors.As(err, &fe) || fe.Field != tc.field || !errors.Is(err, ErrInvalidConfig) || errors.Is(err, limiter.ErrInvalidLimits) {
			t.Errorf("%+v: got %v, want a FieldError for %s", tc.cfg, err, tc.field)
		}
	}
	_, err := NewNATSBroker(NATSBrokerConfig{})
	var fe *limiter.FieldError
	if !errors.As(err, &fe) || fe.Field != "Conn" || !errors.Is(err, ErrInvalidConfig) {
		t.Errorf("NewNATSBroker without a connection: %v", err)
	}
}

func TestRoomLimitsResolution(t *testing.T) {
	t.Parallel()
	cfg := Config{
		Rooms: map[string]RoomLimits{"game-vip": {MaxMembers: 2}},
		RoomPatterns: []RoomPattern{
			{Pattern: "game-*", Limits: RoomLimits{MaxMembers: 10}},
			{Pattern: "*-support-*", Limits: RoomLimits{MaxMembers: 3}},
		},
		DefaultRoom: RoomLimits{MaxMembers: 100},
	}
	for room, want := range map[string]int64{
		"game-vip": 2, "game-1": 10, "game-": 10, "en-support-1": 3, "lobby": 100, "gam": 100,
	} {
		if got := cfg.limitsFor(room).MaxMembers; got != want {
			t.Errorf("%q: MaxMembers %d, want %d", room, got, want)
		}
	}
}
