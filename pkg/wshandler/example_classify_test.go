package wshandler_test

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"log"
	"net/http/httptest"
	"strings"
	"time"

	"github.com/gorilla/websocket"
	"github.com/ratethrottle/ratethrottle/pkg/limiter"
	"github.com/ratethrottle/ratethrottle/pkg/policy"
	"github.com/ratethrottle/ratethrottle/pkg/wshandler"
)

// fixedPolicy is a wshandler.PolicySource that always returns one version;
// a cluster uses a *policy.Watcher instead.
type fixedPolicy struct{ v *policy.Version }

func (p fixedPolicy) Current() *policy.Version { return p.v }

// An application with its own protocol names each message's class with
// Classify: typing indicators get a small bucket of their own, which a
// flood empties while chat messages still pass. The violation sink is set
// once, on the Limiter; the handler reports through it.
func ExampleConfig_classify() {
	doc := &policy.Document{Classes: map[string]policy.Class{
		"typing":  {Connection: policy.Rate{Rate: 2}}, // 2 a minute per connection
		"message": {Connection: policy.Rate{Rate: 60}},
	}}
	tab, err := policy.Compile(doc)
	if err != nil {
		log.Fatal(err)
	}
	lim, err := limiter.New(limiter.Config{
		Limits: limiter.Moderate(),
		Sink: limiter.ViolationFunc(func(v limiter.Violation) {
			fmt.Printf("violation: %s, class %s, layer %s\n", v.Type, v.Class, v.Layer)
		}),
	})
	if err != nil {
		log.Fatal(err)
	}
	defer lim.Close()
	ws, err := wshandler.New(wshandler.Config{
		Limiter: lim,
		Policy:  fixedPolicy{&policy.Version{Document: doc, Table: tab}},
		Classify: func(_ *wshandler.Conn, _ int, data []byte) string {
			if bytes.HasPrefix(data, []byte("typing")) {
				return "typing"
			}
			return "message"
		},
		OnMessage: func(c *wshandler.Conn, _ int, data []byte) { _ = c.Send(data) },
	})
	if err != nil {
		log.Fatal(err)
	}
	srv := httptest.NewServer(ws)
	defer srv.Close()
	defer func() { _ = ws.Shutdown(context.Background()) }()

	c, _, err := websocket.DefaultDialer.Dial("ws"+strings.TrimPrefix(srv.URL, "http"), nil)
	if err != nil {
		log.Fatal(err)
	}
	defer c.Close()
	for _, m := range []string{"typing", "typing", "typing", "hello"} {
		_ = c.WriteMessage(websocket.TextMessage, []byte(m))
		_ = c.SetReadDeadline(time.Now().Add(5 * time.Second))
		_, frame, err := c.ReadMessage()
		if err != nil {
			log.Fatal(err)
		}
		var e struct{ Type, Error, Class, Layer string }
		if json.Unmarshal(frame, &e) == nil && e.Type == "error" {
			fmt.Printf("refused: %s (%s, %s)\n", e.Error, e.Class, e.Layer)
			continue
		}
		fmt.Println("echo:", string(frame))
	}
	// Output:
	// echo: typing
	// echo: typing
	// violation: class_rate, class typing, layer connection
	// refused: class_rate_exceeded (typing, connection)
	// echo: hello
}
