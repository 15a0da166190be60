package cluster

import (
	"fmt"
	"net"
	"sync"
	"time"
)

// Proxy is a TCP proxy on loopback that forwards every connection it
// accepts to one target and can inject faults into them: delay every chunk
// by a fixed latency, drop the bytes (the connections stay open and carry
// nothing, as behind a black hole), or sever them (close every connection
// and refuse new ones until Heal).
//
// A Proxy is safe for concurrent use. Close stops it and closes every
// connection; it is idempotent.
type Proxy struct {
	target string
	ln     net.Listener

	mu      sync.Mutex
	delay   time.Duration
	drop    bool
	severed bool
	closed  bool
	links   map[*link]struct{}
	wg      sync.WaitGroup
}

// link is one proxied connection: the accepted client side and the dialled
// target side.
type link struct {
	client, server net.Conn
	once           sync.Once
}

func (l *link) close() {
	l.once.Do(func() {
		l.client.Close()
		l.server.Close()
	})
}

// maxQueued bounds the chunks in flight in one direction of one link while
// they wait out the delay; a reader blocks when it is full.
const maxQueued = 1024

// NewProxy listens on a free port of 127.0.0.1 and forwards to target
// (host:port), which must be a loopback address.
func NewProxy(target string) (*Proxy, error) {
	host, _, err := net.SplitHostPort(target)
	if err != nil {
		return nil, fmt.Errorf("cluster: proxy target %q: %w", target, err)
	}
	if ip := net.ParseIP(host); ip == nil || !ip.IsLoopback() {
		return nil, fmt.Errorf("cluster: proxy target %q is not a loopback address", target)
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return nil, fmt.Errorf("cluster: proxy listen: %w", err)
	}
	p := &Proxy{target: target, ln: ln, links: make(map[*link]struct{})}
	p.wg.Add(1)
	go p.accept()
	return p, nil
}

// Addr returns the proxy's listen address, host:port.
func (p *Proxy) Addr() string { return p.ln.Addr().String() }

// SetDelay makes every chunk of bytes, in both directions, wait d before it
// is forwarded. Zero forwards at once.
func (p *Proxy) SetDelay(d time.Duration) {
	p.mu.Lock()
	p.delay = d
	p.mu.Unlock()
}

// Drop discards every byte in both directions while on is set, without
// closing anything: the peers see a silent network.
func (p *Proxy) Drop(on bool) {
	p.mu.Lock()
	p.drop = on
	p.mu.Unlock()
}

// Sever closes every open connection and refuses new ones (they are
// accepted and closed at once) until Heal.
func (p *Proxy) Sever() {
	p.mu.Lock()
	p.severed = true
	links := p.takeLinks()
	p.mu.Unlock()
	for _, l := range links {
		l.close()
	}
}

// Heal ends Sever and Drop: new connections are forwarded again.
func (p *Proxy) Heal() {
	p.mu.Lock()
	p.severed = false
	p.drop = false
	p.mu.Unlock()
}

// Links returns the number of open proxied connections.
func (p *Proxy) Links() int {
	p.mu.Lock()
	defer p.mu.Unlock()
	return len(p.links)
}

// Close stops accepting, closes every connection and waits for the
// proxy's goroutines. It is idempotent.
func (p *Proxy) Close() error {
	p.mu.Lock()
	if p.closed {
		p.mu.Unlock()
		return nil
	}
	p.closed = true
	links := p.takeLinks()
	p.mu.Unlock()
	err := p.ln.Close()
	for _, l := range links {
		l.close()
	}
	p.wg.Wait()
	return err
}

// takeLinks empties the link set and returns what it held. Requires p.mu
// held.
func (p *Proxy) takeLinks() []*link {
	out := make([]*link, 0, len(p.links))
	for l := range p.links {
		out = append(out, l)
	}
	clear(p.links)
	return out
}

func (p *Proxy) accept() {
	defer p.wg.Done()
	for {
		c, err := p.ln.Accept()
		if err != nil {
			return
		}
		p.mu.Lock()
		refuse := p.severed || p.closed
		p.mu.Unlock()
		if refuse {
			c.Close()
			continue
		}
		s, err := net.DialTimeout("tcp", p.target, 2*time.Second)
		if err != nil {
			c.Close()
			continue
		}
		l := &link{client: c, server: s}
		p.mu.Lock()
		if p.severed || p.closed {
			p.mu.Unlock()
			l.close()
			continue
		}
		p.links[l] = struct{}{}
		p.wg.Add(2)
		p.mu.Unlock()
		go p.pipe(l, c, s)
		go p.pipe(l, s, c)
	}
}

// chunk is bytes read from one side, due to be written to the other.
type chunk struct {
	b   []byte
	due time.Time
}

// pipe copies from src to dst through a queue that holds each chunk until
// its delay has passed. It ends, closing the link, when either side fails.
func (p *Proxy) pipe(l *link, src, dst net.Conn) {
	defer p.wg.Done()
	q := make(chan chunk, maxQueued)
	written := make(chan struct{})
	go func() {
		defer close(written)
		for c := range q {
			if d := time.Until(c.due); d > 0 {
				time.Sleep(d)
			}
			if _, err := dst.Write(c.b); err != nil {
				l.close()
				for range q {
				}
				return
			}
		}
	}()
	buf := make([]byte, 32<<10)
	for {
		n, err := src.Read(buf)
		if n > 0 {
			p.mu.Lock()
			drop, delay := p.drop, p.delay
			p.mu.Unlock()
			if !drop {
				q <- chunk{b: append([]byte(nil), buf[:n]...), due: time.Now().Add(delay)}
			}
		}
		if err != nil {
			break // EOF, a reset or a closed link: end both directions
		}
	}
	close(q)
	<-written
	l.close()
	p.mu.Lock()
	delete(p.links, l)
	p.mu.Unlock()
}
