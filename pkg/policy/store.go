package policy

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"regexp"
	"sync/atomic"
	"time"
	"unicode/utf8"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"go.yaml.in/yaml/v3"

	"github.com/ratethrottle/ratethrottle/pkg/events"
)

// Defaults of StoreConfig.
const (
	DefaultBucket  = "ratethrottle_policy"
	DefaultKey     = "policy"
	DefaultHistory = 64 // the most JetStream KV keeps per key
)

// MaxWhoLength caps the author of a change, in bytes.
const MaxWhoLength = 256

// StoreConfig configures a Store. Conn is required; zero fields get
// defaults.
type StoreConfig struct {
	// Conn is the NATS connection. The Store does not close it.
	Conn *nats.Conn
	// Bucket is the JetStream KV bucket. Empty means DefaultBucket. It is
	// created if missing.
	Bucket string
	// Key is the KV key of the document. Empty means DefaultKey.
	Key string
	// History is the number of revisions the bucket keeps, at most 64.
	// Zero means DefaultHistory. It applies when the bucket is created.
	History int
	// Replicas is the bucket's replica count. Zero means 1.
	Replicas int
	// EventPrefix is the prefix of the policy_changed subject (see
	// ChangedSubject). Empty means events.DefaultPrefix.
	EventPrefix string
	// NodeID names this node in events. Empty means the host name, as in
	// package events.
	NodeID string
	// Timeout bounds each KV operation. Zero means 2 s.
	Timeout time.Duration
	// Now stamps changes. Nil means time.Now.
	Now func() time.Time
}

var (
	bucketRe = regexp.MustCompile(`^[a-zA-Z0-9_-]+$`)
	keyRe    = regexp.MustCompile(`^[-/_=.a-zA-Z0-9]+$`)
)

func (c *StoreConfig) setDefaults() error {
	if c.Conn == nil {
		return invalidConfig("Conn", nil, "is required")
	}
	if c.Bucket == "" {
		c.Bucket = DefaultBucket
	}
	if c.Key == "" {
		c.Key = DefaultKey
	}
	if c.History == 0 {
		c.History = DefaultHistory
	}
	if c.Replicas == 0 {
		c.Replicas = 1
	}
	if c.Timeout == 0 {
		c.Timeout = 2 * time.Second
	}
	if c.NodeID == "" {
		c.NodeID = "node"
		if h, err := os.Hostname(); err == nil && h != "" {
			c.NodeID = h
		}
	}
	if c.Now == nil {
		c.Now = time.Now
	}
	switch {
	case !bucketRe.MatchString(c.Bucket):
		return invalidConfig("Bucket", c.Bucket, "only letters, digits, '_' and '-'")
	case !keyRe.MatchString(c.Key) || c.Key[0] == '.' || c.Key[len(c.Key)-1] == '.':
		return invalidConfig("Key", c.Key, "not a valid KV key")
	case c.History < 1 || c.History > 64:
		return invalidConfig("History", c.History, "must be 1 to 64")
	case c.Replicas < 1 || c.Replicas > 5:
		return invalidConfig("Replicas", c.Replicas, "must be 1 to 5")
	case c.Timeout < 0:
		return invalidConfig("Timeout", c.Timeout, "must not be negative")
	case events.ValidatePrefix(c.EventPrefix) != nil:
		return invalidConfig("EventPrefix", c.EventPrefix, "must be dot-separated tokens without spaces or wildcards")
	}
	return nil
}

// Version is one revision of the stored policy.
type Version struct {
	// Revision is the KV revision; 0 for a document that did not come from
	// the cluster (a Watcher's fallback).
	Revision uint64
	// Who and At are the author and time the writer recorded; empty for a
	// document written without the envelope (by another tool).
	Who string
	At  time.Time
	// Document is the policy; nil when Err is set.
	Document *Document
	// Table is Document compiled; nil when Err is set.
	Table *Table
	// Err is set, in History only, for a revision that is not a valid
	// document, or that deleted the key (ErrNotFound).
	Err error
}

// envelope is the stored form: the document and who wrote it when.
type envelope struct {
	ChangedBy string    `yaml:"changed_by"`
	ChangedAt time.Time `yaml:"changed_at"`
	Document  *Document `yaml:"document"`
}

// Store keeps the policy document in a JetStream KV key. Every write is
// validated first and compared against the revision it is based on. A
// Store is safe for concurrent use.
type Store struct {
	cfg       StoreConfig
	kv        jetstream.KeyValue
	subject   string
	evFailed  atomic.Uint64
	published atomic.Uint64
}

// NewStore creates or binds the bucket and returns a Store. An invalid cfg
// is refused with a *limiter.FieldError that unwraps to ErrInvalidConfig.
func NewStore(ctx context.Context, cfg StoreConfig) (*Store, error) {
	if err := cfg.setDefaults(); err != nil {
		return nil, err
	}
	js, err := jetstream.New(cfg.Conn)
	if err != nil {
		return nil, fmt.Errorf("policy: jetstream: %w", err)
	}
	ctx, cancel := context.WithTimeout(ctx, 2*cfg.Timeout)
	defer cancel()
	kv, err := js.CreateKeyValue(ctx, jetstream.KeyValueConfig{
		Bucket:      cfg.Bucket,
		Description: "RateThrottle policy document",
		History:     uint8(cfg.History),
		Replicas:    cfg.Replicas,
	})
	if errors.Is(err, jetstream.ErrBucketExists) {
		kv, err = js.KeyValue(ctx, cfg.Bucket)
	}
	if err != nil {
		return nil, fmt.Errorf("policy: bucket %q: %w", cfg.Bucket, err)
	}
	return &Store{cfg: cfg, kv: kv, subject: ChangedSubject(cfg.EventPrefix)}, nil
}

// Get returns the stored policy and its revision, ErrNotFound if there is
// none, or an error wrapping ErrInvalid if the stored value is not a valid
// document (written by another tool).
func (s *Store) Get(ctx context.Context) (*Version, error) {
	ctx, cancel := context.WithTimeout(ctx, s.cfg.Timeout)
	defer cancel()
	e, err := s.kv.Get(ctx, s.cfg.Key)
	if errors.Is(err, jetstream.ErrKeyNotFound) {
		return nil, ErrNotFound
	}
	if err != nil {
		return nil, fmt.Errorf("policy: get: %w", err)
	}
	v := decodeEntry(e)
	if v.Err != nil {
		return nil, v.Err
	}
	return v, nil
}

// Put validates doc and writes it if the stored revision is ifRevision (0:
// only if no document is stored), recording who made the change. An
// invalid doc returns its *ValidationError and is never written; a stale
// ifRevision returns a *StaleError (errors.Is ErrStale). After a
// successful write a ChangedEvent is published; a failure to publish does
// not fail the Put (see EventsFailed).
func (s *Store) Put(ctx context.Context, doc *Document, ifRevision uint64, who string) (*Version, error) {
	if doc == nil {
		doc = &Document{}
	}
	if len(who) > MaxWhoLength || !utf8.ValidString(who) {
		return nil, fmt.Errorf("policy: who must be valid UTF-8 of at most %d bytes", MaxWhoLength)
	}
	tab, err := Compile(doc)
	if err != nil {
		return nil, err
	}
	// The previous document, for the change summary; the write below is
	// the compare-and-swap, this read only answers a stale caller early.
	var prev *Document
	var have uint64
	switch cur, err := s.Get(ctx); {
	case err == nil:
		prev, have = cur.Document, cur.Revision
	case errors.Is(err, ErrNotFound):
	case errors.Is(err, ErrInvalid):
		have = s.revision(ctx)
	default:
		return nil, err
	}
	if have != ifRevision {
		return nil, &StaleError{Want: ifRevision, Have: have}
	}
	at := s.cfg.Now().UTC()
	val, err := yaml.Marshal(&envelope{ChangedBy: who, ChangedAt: at, Document: doc})
	if err != nil {
		return nil, fmt.Errorf("policy: encode: %w", err)
	}
	wctx, cancel := context.WithTimeout(ctx, s.cfg.Timeout)
	defer cancel()
	var rev uint64
	if ifRevision == 0 {
		rev, err = s.kv.Create(wctx, s.cfg.Key, val)
	} else {
		rev, err = s.kv.Update(wctx, s.cfg.Key, val, ifRevision)
	}
	if errors.Is(err, jetstream.ErrKeyExists) || errors.Is(err, jetstream.ErrKeyRevisionMismatch) {
		return nil, &StaleError{Want: ifRevision, Have: s.revision(ctx)}
	}
	if err != nil {
		return nil, fmt.Errorf("policy: put: %w", err)
	}
	s.publish(&ChangedEvent{V: 1, Type: EventType, Time: at, Node: s.cfg.NodeID, Who: who,
		Revision: rev, PreviousRevision: have, Changed: Diff(prev, doc)})
	return &Version{Revision: rev, Who: who, At: at, Document: doc, Table: tab}, nil
}

// revision returns the key's latest revision, 0 if it cannot be read.
func (s *Store) revision(ctx context.Context) uint64 {
	ctx, cancel := context.WithTimeout(ctx, s.cfg.Timeout)
	defer cancel()
	e, err := s.kv.Get(ctx, s.cfg.Key)
	if err != nil {
		return 0
	}
	return e.Revision()
}

func (s *Store) publish(ev *ChangedEvent) {
	b, err := json.Marshal(ev)
	if err == nil {
		err = s.cfg.Conn.Publish(s.subject, b)
	}
	if err != nil {
		s.evFailed.Add(1)
		return
	}
	s.published.Add(1)
}

// EventsFailed returns the number of policy_changed events that could not
// be published.
func (s *Store) EventsFailed() uint64 { return s.evFailed.Load() }

// History returns the revisions the bucket keeps of the key, oldest first,
// invalid ones and deletions included with Err set. It returns ErrNotFound
// if the key was never written.
func (s *Store) History(ctx context.Context) ([]Version, error) {
	ctx, cancel := context.WithTimeout(ctx, s.cfg.Timeout)
	defer cancel()
	es, err := s.kv.History(ctx, s.cfg.Key)
	if errors.Is(err, jetstream.ErrKeyNotFound) {
		return nil, ErrNotFound
	}
	if err != nil {
		return nil, fmt.Errorf("policy: history: %w", err)
	}
	out := make([]Version, len(es))
	for i, e := range es {
		out[i] = *decodeEntry(e)
	}
	return out, nil
}

// decodeEntry reads one KV entry: the envelope Put writes, or a bare
// document written by another tool.
func decodeEntry(e jetstream.KeyValueEntry) *Version {
	v := &Version{Revision: e.Revision()}
	if e.Operation() != jetstream.KeyValuePut {
		v.Err = ErrNotFound
		return v
	}
	var err error
	v.Document, v.Who, v.At, err = decodeValue(e.Value())
	if err == nil {
		v.Table, err = Compile(v.Document)
	}
	if err != nil {
		v.Document, v.Table = nil, nil
		v.Err = fmt.Errorf("revision %d: %w", v.Revision, err)
	}
	return v
}

func decodeValue(b []byte) (doc *Document, who string, at time.Time, err error) {
	if len(b) > MaxDocumentSize {
		return nil, "", at, fmt.Errorf("%w: %d bytes exceed the %d-byte maximum", ErrInvalid, len(b), MaxDocumentSize)
	}
	var root yaml.Node
	if err := yaml.Unmarshal(b, &root); err != nil {
		return nil, "", at, fmt.Errorf("%w: %v", ErrInvalid, err)
	}
	if len(root.Content) == 0 {
		return nil, "", at, fmt.Errorf("%w: empty value", ErrInvalid)
	}
	n := root.Content[0]
	var docNode *yaml.Node
	if n.Kind == yaml.MappingNode {
		for i := 0; i+1 < len(n.Content); i += 2 {
			if n.Content[i].Value == "document" {
				docNode = n.Content[i+1]
			}
		}
	}
	if docNode == nil {
		doc, err = parseNode(n, "")
		return doc, "", at, err
	}
	var env struct {
		ChangedBy string    `yaml:"changed_by"`
		ChangedAt time.Time `yaml:"changed_at"`
		Document  yaml.Node `yaml:"document"`
	}
	if err := n.Decode(&env); err != nil {
		return nil, "", at, fmt.Errorf("%w: %v", ErrInvalid, err)
	}
	doc, err = parseNode(docNode, "")
	return doc, env.ChangedBy, env.ChangedAt, err
}
