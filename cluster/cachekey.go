package cluster

import (
	"fmt"
	"reflect"
	"strconv"
)

// MaxCacheKeyLen is the longest encoded cache key, in bytes.
const MaxCacheKeyLen = 16 << 10

// KeyCodec turns cache keys into the text that invalidation records carry,
// and back. Implementations must be safe for concurrent use.
type KeyCodec[K comparable] interface {
	// Encode returns key's text: valid UTF-8 (use hex or base64 for
	// binary keys), at most MaxCacheKeyLen bytes, equal for equal keys,
	// and such that Decode(Encode(k)) == k.
	Encode(key K) string
	// Decode parses text that Encode returned, possibly on a node that
	// runs another release of the application. An error does not stop
	// the node: the receiving cache flushes itself instead (invalidating
	// more than asked is always safe).
	Decode(text string) (K, error)
}

// KeyFuncs adapts an encode and a decode function to KeyCodec, for key
// types the default codec does not cover (structs, arrays):
//
//	type userKey struct{ Tenant, User string }
//	keys := cluster.KeyFuncs(
//		func(k userKey) string { return k.Tenant + "/" + k.User },
//		func(s string) (userKey, error) {
//			t, u, ok := strings.Cut(s, "/")
//			if !ok {
//				return userKey{}, fmt.Errorf("no '/' in %q", s)
//			}
//			return userKey{t, u}, nil
//		})
func KeyFuncs[K comparable](encode func(K) string, decode func(string) (K, error)) KeyCodec[K] {
	if encode == nil || decode == nil {
		return nil // rejected by NewCache, naming the field
	}
	return keyFuncs[K]{encode, decode}
}

type keyFuncs[K comparable] struct {
	encode func(K) string
	decode func(string) (K, error)
}

func (f keyFuncs[K]) Encode(key K) string           { return f.encode(key) }
func (f keyFuncs[K]) Decode(text string) (K, error) { return f.decode(text) }

// kindKeys is the default codec for keys whose underlying type is a string
// (the key itself) or an integer (its decimal form).
type kindKeys[K comparable] struct{ bits int }

// defaultKeys returns the default codec for K, or nil when K is neither a
// string nor an integer type.
func defaultKeys[K comparable]() KeyCodec[K] {
	t := reflect.TypeFor[K]()
	switch t.Kind() {
	case reflect.String:
		return kindKeys[K]{}
	case reflect.Int, reflect.Int8, reflect.Int16, reflect.Int32, reflect.Int64,
		reflect.Uint, reflect.Uint8, reflect.Uint16, reflect.Uint32, reflect.Uint64:
		return kindKeys[K]{bits: t.Bits()}
	}
	return nil
}

func (c kindKeys[K]) Encode(key K) string {
	v := reflect.ValueOf(key)
	switch {
	case v.CanInt():
		return strconv.FormatInt(v.Int(), 10)
	case v.CanUint():
		return strconv.FormatUint(v.Uint(), 10)
	}
	return v.String()
}

func (c kindKeys[K]) Decode(text string) (K, error) {
	var key K
	v := reflect.ValueOf(&key).Elem()
	switch {
	case v.CanInt():
		n, err := strconv.ParseInt(text, 10, c.bits)
		if err != nil {
			return key, fmt.Errorf("decode key: %w", err)
		}
		v.SetInt(n)
	case v.CanUint():
		n, err := strconv.ParseUint(text, 10, c.bits)
		if err != nil {
			return key, fmt.Errorf("decode key: %w", err)
		}
		v.SetUint(n)
	default:
		v.SetString(text)
	}
	return key, nil
}
