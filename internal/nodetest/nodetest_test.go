package nodetest

import "testing"

func TestAddr(t *testing.T) {
	if _, ok := Addr("starting...\n"); ok {
		t.Fatal("address found in output without the open line")
	}
	out := "level=INFO msg=started\nRateThrottle node n1: open http://127.0.0.1:8081/ (operations on http://127.0.0.1:9001/: /dashboard, /metrics, /stats, /admin)\n"
	if got, ok := Addr(out); !ok || got != "127.0.0.1:8081" {
		t.Fatalf("Addr = %q, %v; want 127.0.0.1:8081", got, ok)
	}
	if got, ok := OpsAddr(out); !ok || got != "127.0.0.1:9001" {
		t.Fatalf("OpsAddr = %q, %v; want 127.0.0.1:9001", got, ok)
	}
	if _, ok := OpsAddr("RateThrottle node n1: open http://127.0.0.1:8081/ (operations endpoints off (ops_listen is empty))\n"); ok {
		t.Fatal("OpsAddr found an address with the operations listener off")
	}
	var b Buffer
	_, _ = b.Write([]byte("abc"))
	if b.String() != "abc" {
		t.Fatalf("Buffer holds %q", b.String())
	}
}
