package identity_test

import (
	"errors"
	"fmt"
	"net/http"
	"net/http/httptest"
	"time"

	"github.com/golang-jwt/jwt/v5"

	"github.com/ratethrottle/ratethrottle/pkg/identity"
)

// A JWT resolver with an HMAC secret and the tier in the "plan" claim. A
// browser passes the token as ?token=…; other clients send
// "Authorization: Bearer …".
func ExampleJWT() {
	secret := []byte("a secret of at least thirty-two bytes")
	now := time.Date(2026, 1, 1, 12, 0, 0, 0, time.UTC)
	ids, err := identity.NewJWT(identity.JWTConfig{
		HMACSecret: secret,
		TierClaim:  "plan",
		Now:        func() time.Time { return now },
	})
	if err != nil {
		panic(err)
	}
	tok, _ := jwt.NewWithClaims(jwt.SigningMethodHS256, jwt.MapClaims{
		"sub": "ada", "plan": "pro", "exp": now.Add(time.Hour).Unix(),
	}).SignedString(secret)

	r := httptest.NewRequest(http.MethodGet, "/ws?token="+tok, nil)
	r.RemoteAddr = "[2001:db8:1:2::7]:50000"
	id, err := ids.Resolve(r)
	fmt.Println(id.User, id.Tier, id.Address, err)

	r = httptest.NewRequest(http.MethodGet, "/ws", nil)
	r.Header.Set("Authorization", "Bearer "+tok+"x")
	_, err = ids.Resolve(r)
	var te *identity.TokenError
	if errors.As(err, &te) {
		fmt.Println(errors.Is(err, identity.ErrBadSignature), te.HTTPStatus(), te.CloseCode())
	}
	// Output:
	// ada pro 2001:db8:1:2::/64 <nil>
	// true 401 1008
}
