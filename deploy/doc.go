// Package deploy holds pushgate's deployment descriptions and the tests
// that check them: compose.yaml for one Docker host and the kustomize base
// under kubernetes/base. It has no code of its own; it is a module of its
// own so that the main module does not depend on kustomize, the Kubernetes
// API types or the compose loader.
//
// The tests build the kustomize base and decode every resource strictly
// into the Kubernetes API types, load compose.yaml with the loader Docker
// Compose uses, and load each process's resulting settings with pushgate's
// own configuration loader, so that a misspelt setting, a file path that
// no volume or secret provides, or a probe on the wrong port fails here.
package deploy
