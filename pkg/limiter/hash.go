package limiter

import (
	"encoding/binary"
	"hash/maphash"
	"math/bits"
	"unsafe"
)

// keyHasher hashes the IDs and scopes of a MemoryStore's keys: client IDs,
// class and room names, mostly shorter than 17 bytes, hashed on every
// decision. For those it mixes the
// bytes with two secret 64-bit keys by 128-bit multiplication (the
// construction of wyhash, which the Go runtime also uses where it has no
// AES hash), inline and without maphash's calls; longer IDs go to maphash.
// Both keys enter both operands of each multiplication, so that no chosen
// input zeroes one; an attacker who does not know them cannot aim keys at
// one slot.
type keyHasher struct {
	seed   maphash.Seed
	k0, k1 uint64
}

func newKeyHasher() keyHasher {
	seed := maphash.MakeSeed()
	return keyHasher{seed: seed, k0: maphash.String(seed, "k0") | 1, k1: maphash.String(seed, "k1") | 1}
}

// Constants of wyhash: odd 64-bit numbers with balanced bits.
const (
	wyp0 = 0xa0761d6478bd642f
	wyp1 = 0xe7037ed1a0b428db
)

func mum(a, b uint64) uint64 {
	hi, lo := bits.Mul64(a, b)
	return hi ^ lo
}

// id returns the hash of s.
func (k *keyHasher) id(s string) uint64 {
	n := len(s)
	if n > 16 {
		return maphash.String(k.seed, s)
	}
	var a, b uint64
	if n > 0 {
		p := unsafe.Slice(unsafe.StringData(s), n)
		switch {
		case n >= 8:
			a, b = binary.LittleEndian.Uint64(p), binary.LittleEndian.Uint64(p[n-8:])
		case n >= 4:
			a, b = uint64(binary.LittleEndian.Uint32(p)), uint64(binary.LittleEndian.Uint32(p[n-4:]))
		default:
			a = uint64(p[0])<<16 | uint64(p[n>>1])<<8 | uint64(p[n-1])
		}
	}
	return mum(k.k1^uint64(n)^wyp1, mum(a^k.k0^wyp0, b^k.k1))
}

// str returns the hash of any string, for slot clients.
func (k *keyHasher) str(s string) uint64 { return maphash.String(k.seed, s) }
