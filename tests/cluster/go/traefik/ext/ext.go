// Package ext is the extension point of Traefik's dynamic configuration, a nested module of
// Traefik's repository that its module zip leaves out. Traefik's open-source build has it empty:
// these types are inlined into dynamic.HTTP and dynamic.Router and add no field.
package ext

// HTTP is inlined into dynamic.HTTP.
type HTTP struct{}

// Router is inlined into dynamic.Router.
type Router struct{}
