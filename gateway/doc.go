// Package gateway is pushgate's HTTP API: the signed /v1 routes backends
// and admins call, the signature middleware in front of them, the
// RFC 9457 problem documents every refusal is answered with, and the
// health, readiness and metrics endpoints.
//
// The gateway decides who may ask for what; queue.Service does it. Every
// /v1 route runs behind the same middleware: the body is read (at most
// MaxBodyBytes, or MaxImportBytes for a device import), the RFC 9421
// signature is verified (replay guard and revocation included), the key's
// role is checked against the route, and a request with a body must be
// JSON. Handlers then validate the whole
// request before they call the Service.
//
// # Invariants
//
//   - No /v1 handler runs for a request whose signature did not verify or
//     whose key lacks the route's role.
//   - A refused request writes nothing and enqueues nothing: handlers
//     validate fully before calling the Service, which refuses its own
//     cases before writing. (The verifier's replay guard does remember the
//     nonce of a correctly signed request, refused or not, so that it
//     cannot be replayed.)
//   - Every error answer is an application/problem+json document whose
//     code maps to its HTTP status in one table (statusOf); infrastructure
//     failures reach clients only as "unavailable", without detail.
//   - A broadcast's status is answered only to the key that submitted it,
//     an admin or an approver (queue.SeesAll); to any other key it does not
//     exist.
//   - Device tokens, signatures and keys are never logged: logs carry the
//     route pattern, never the request path, plus key_id and broadcast_id.
//
// # Redis keys
//
// None of its own. The Service and the verifier's replay guard own every
// key the gateway causes to be written.
package gateway
