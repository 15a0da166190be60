package cluster

import (
	"bufio"
	"io"
	"net"
	"testing"
	"time"
)

// echoServer accepts connections on loopback and echoes lines back until
// cleanup.
func echoServer(t *testing.T) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	done := make(chan struct{})
	go func() {
		defer close(done)
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			go func() {
				defer c.Close()
				_, _ = io.Copy(c, c)
			}()
		}
	}()
	t.Cleanup(func() {
		ln.Close()
		<-done
	})
	return ln.Addr().String()
}

// roundTrip writes a line to c and reads it back within timeout.
func roundTrip(c net.Conn, r *bufio.Reader, timeout time.Duration) error {
	_ = c.SetDeadline(time.Now().Add(timeout))
	if _, err := c.Write([]byte("ping\n")); err != nil {
		return err
	}
	_, err := r.ReadString('\n')
	return err
}

func TestProxyFaults(t *testing.T) {
	checkGoroutines(t)
	p, err := NewProxy(echoServer(t))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { p.Close() })
	if _, err := NewProxy("192.0.2.1:4222"); err == nil {
		t.Error("a non-loopback target was accepted")
	}
	dial := func() (net.Conn, *bufio.Reader) {
		c, err := net.Dial("tcp", p.Addr())
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { c.Close() })
		return c, bufio.NewReader(c)
	}

	c, r := dial()
	if err := roundTrip(c, r, 2*time.Second); err != nil {
		t.Fatalf("pass: %v", err)
	}

	// Delay: 30 ms each way, so a round trip takes at least 60 ms.
	p.SetDelay(30 * time.Millisecond)
	start := time.Now()
	if err := roundTrip(c, r, 2*time.Second); err != nil {
		t.Fatalf("delay: %v", err)
	}
	if rtt := time.Since(start); rtt < 60*time.Millisecond {
		t.Errorf("delayed round trip took %v, want at least 60ms", rtt)
	}
	p.SetDelay(0)

	// Drop: nothing comes back, the connection stays open.
	p.Drop(true)
	if err := roundTrip(c, r, 200*time.Millisecond); err == nil {
		t.Error("a round trip passed while dropping")
	}
	if p.Links() != 1 {
		t.Errorf("%d links while dropping, want 1", p.Links())
	}
	p.Heal()

	// Sever: open connections end, new ones are refused until Heal.
	p.Sever()
	_ = c.SetDeadline(time.Now().Add(2 * time.Second))
	if _, err := io.ReadAll(r); err != nil {
		t.Logf("severed connection: %v", err)
	}
	c2, r2 := dial()
	if err := roundTrip(c2, r2, time.Second); err == nil {
		t.Error("a new connection worked while severed")
	}
	p.Heal()
	c3, r3 := dial()
	if err := roundTrip(c3, r3, 2*time.Second); err != nil {
		t.Fatalf("after heal: %v", err)
	}
}
