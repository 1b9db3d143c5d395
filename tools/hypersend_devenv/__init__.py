"""Hypersend's local development and test environment.

Builds the upstream test infrastructure (Kubernetes control plane, kwok, FerretDB, Helm) from
its Go modules into a version-keyed cache, and starts those servers on loopback.
"""
