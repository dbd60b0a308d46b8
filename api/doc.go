// Package api is pushgate's v1 wire contract: the request and response
// bodies of every HTTP route, the paths those routes live at, the stable
// problem codes with the one table that maps each to its HTTP status, and
// the one validation of every body.
//
// The gateway parses requests with it, the queue re-validates stored
// envelopes with the same functions (so that what the API accepts, a
// worker accepts too), and package client and the CLI speak it. It imports
// nothing of pushgate but signing, for the signature codes, and no
// provider SDK or Redis client, so a Go backend that imports the client
// links only this contract.
//
// # Invariants
//
//   - Every refusal is an *Error (or a *signing.Error from the signature
//     check) whose Code is in the table of StatusOf; a code missing from it
//     is answered as an internal error, never with a status nobody chose.
//   - Parse* functions refuse unknown fields, trailing data and every
//     value the workers or the providers would refuse later.
//
// See docs/ARCHITECTURE.md for where each check is enforced again.
package api
