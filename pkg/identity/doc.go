// Package identity says who a WebSocket client is: the user when signed in,
// the address it connects from, and attributes such as its tier, resolved
// once per connection from the HTTP request.
//
// A Resolver is the embedding program's hook (a cookie, a header, a query
// token). JWT is the resolver the node ships: it verifies a JSON Web Token
// signed with an HMAC secret, RSA or ECDSA public keys, or the keys of a
// JWKS file; "sub" is the user and a configurable claim names the tier;
// "exp" and "nbf" are honoured. The token comes from the Authorization
// header ("Bearer …") or, for browsers, which cannot set headers on a
// WebSocket, from a query parameter. A refused token is a *TokenError,
// which a handler answers with HTTP 401, or a close with code 1008 once
// upgraded.
package identity
