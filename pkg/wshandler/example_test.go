package wshandler_test

import (
	"context"
	"errors"
	"fmt"
	"log"
	"net/http"
	"net/http/httptest"
	"strings"
	"time"

	"github.com/gorilla/websocket"
	"github.com/ratethrottle/ratethrottle/pkg/limiter"
	"github.com/ratethrottle/ratethrottle/pkg/wshandler"
)

// An application mounts the handler on its own mux, next to its other
// routes, and shuts it down before the server.
func Example() {
	lim, err := limiter.New(limiter.Config{Limits: limiter.Moderate()})
	if err != nil {
		log.Fatal(err)
	}
	defer lim.Close()

	ws, err := wshandler.New(wshandler.Config{
		Limiter: lim,
		NodeID:  "node-1",
		// Every room: 500 members, 600 messages a minute in all, 30 per member.
		DefaultRoom: wshandler.RoomLimits{MaxMembers: 500, MessagesPerMinute: 600, MemberMessagesPerMinute: 30},
		// One-to-one support rooms.
		RoomPatterns: []wshandler.RoomPattern{{Pattern: "support-*", Limits: wshandler.RoomLimits{MaxMembers: 2}}},
	})
	if err != nil {
		log.Fatal(err)
	}

	mux := http.NewServeMux()
	mux.Handle("/ws", ws)
	mux.HandleFunc("/healthz", func(w http.ResponseWriter, _ *http.Request) { fmt.Fprintln(w, "ok") })

	// In a real program: srv := &http.Server{Addr: ":8080", Handler: mux}; srv.ListenAndServe().
	srv := httptest.NewServer(mux)
	defer srv.Close()

	// A client joins a room and says hello.
	c, _, err := websocket.DefaultDialer.Dial("ws"+strings.TrimPrefix(srv.URL, "http")+"/ws", nil)
	if err != nil {
		log.Fatal(err)
	}
	_ = c.WriteMessage(websocket.TextMessage, []byte(`{"type":"join","room":"lobby","name":"alice"}`))
	_ = c.WriteMessage(websocket.TextMessage, []byte(`{"type":"message","room":"lobby","data":{"text":"hello"}}`))
	for i := 0; i < 2; i++ {
		_ = c.SetReadDeadline(time.Now().Add(5 * time.Second))
		_, frame, err := c.ReadMessage()
		if err != nil {
			log.Fatal(err)
		}
		fmt.Println(string(frame))
	}
	_ = c.WriteControl(websocket.CloseMessage, websocket.FormatCloseMessage(websocket.CloseNormalClosure, ""), time.Now().Add(time.Second))
	_ = c.Close()

	// On SIGTERM: close every connection with 1001, then stop the server.
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if err := ws.Shutdown(ctx); err != nil {
		log.Print(err)
	}
	// Output:
	// {"type":"joined","room":"lobby","connection":"node-1-1","name":"alice"}
	// {"type":"message","room":"lobby","from":"node-1-1","name":"alice","data":{"text":"hello"}}
}

// Room limits change in a running handler: open connections stay, and
// an invalid rule is refused with the field it names, changing nothing.
func ExampleHandler_SetRoomLimits() {
	lim, err := limiter.New(limiter.Config{Limits: limiter.Moderate()})
	if err != nil {
		log.Fatal(err)
	}
	defer lim.Close()
	ws, err := wshandler.New(wshandler.Config{Limiter: lim, DefaultRoom: wshandler.RoomLimits{MaxMembers: 500}})
	if err != nil {
		log.Fatal(err)
	}
	defer ws.Shutdown(context.Background())

	// During an incident: quieter rooms everywhere, the support rooms as they were.
	err = ws.SetRoomLimits(nil,
		[]wshandler.RoomPattern{{Pattern: "support-*", Limits: wshandler.RoomLimits{MaxMembers: 2}}},
		wshandler.RoomLimits{MaxMembers: 500, MemberMessagesPerMinute: 10})
	fmt.Println(err)

	err = ws.SetRoomLimits(nil, nil, wshandler.RoomLimits{MaxMembers: -1})
	var fe *limiter.FieldError
	fmt.Println(errors.As(err, &fe), fe.Field, errors.Is(err, wshandler.ErrInvalidConfig))
	// Output:
	// <nil>
	// true DefaultRoom.MaxMembers true
}
