// @hypersend/client: Hypersend protocol v1 (docs/protocol.md) for browsers and Node.
export * from "./errors.js";
export * from "./types.js";
export { RestClient, newClientId, refreshAt } from "./rest.js";
export { Client, backoffDelay } from "./client.js";
