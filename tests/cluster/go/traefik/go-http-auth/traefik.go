package auth

import (
	"fmt"
	"net/http"
	"strings"
	"time"
)

// What Traefik's basicAuth and digestAuth middlewares use beyond abbot/go-http-auth v0.4.0. The
// fork they are written against (containous/go-http-auth) is not served by the module proxy
// this project builds from, so build.sh adds this file to a copy of v0.4.0.

// CheckSecret reports whether password matches secret, an htpasswd entry, exactly as
// (*BasicAuth).CheckAuth matches them.
func CheckSecret(password, secret string) bool {
	compare := compareFuncs[0].compare
	for _, cmp := range compareFuncs[1:] {
		if strings.HasPrefix(secret, cmp.prefix) {
			compare = cmp.compare
			break
		}
	}
	return compare([]byte(secret), []byte(password)) == nil
}

// RequireAuthStale is RequireAuth telling the client that its nonce is stale (RFC 2617
// 3.2.1), so that it retries with a new one without asking the user again. v0.4.0's CheckAuth
// never reports a stale nonce, so Traefik reaches this only if that changes.
func (a *DigestAuth) RequireAuthStale(w http.ResponseWriter, r *http.Request) {
	if len(a.clients) > a.ClientCacheSize+a.ClientCacheTolerance {
		a.Purge(a.ClientCacheTolerance * 2)
	}
	nonce := RandomKey()
	a.clients[nonce] = &digest_client{nc: 0, last_seen: time.Now().UnixNano()}
	w.Header().Set(contentType, a.Headers.V().UnauthContentType)
	w.Header().Set(a.Headers.V().Authenticate,
		fmt.Sprintf(`Digest realm="%s", nonce="%s", opaque="%s", algorithm="MD5", qop="auth", stale=true`,
			a.Realm, nonce, a.Opaque))
	w.WriteHeader(a.Headers.V().UnauthCode)
	_, _ = w.Write([]byte(a.Headers.V().UnauthResponse))
}
