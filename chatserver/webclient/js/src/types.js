// The protocol's objects and frames (docs/protocol.md), with the wire's field names.
export {};
