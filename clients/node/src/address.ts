// The server address a client is given: HOST:PORT, checked before any connection is tried
// (the Python client's address.py).

export const DEFAULT_ADDR = "127.0.0.1:50051";

/**
 * `addr` if it is HOST:PORT with a port from 1 to 65535; a RangeError if not. grpc-js would take
 * `http://host:port` as a name to resolve, and fail later with less to go on.
 */
export function checkAddress(addr: string): string {
  const at = addr.lastIndexOf(":");
  const host = at < 0 ? "" : addr.slice(0, at);
  const port = at < 0 ? "" : addr.slice(at + 1);
  const bracketed = host.startsWith("[") && host.endsWith("]"); // an IPv6 literal: [::1]:50051
  const ok =
    at >= 0 &&
    host !== "" &&
    !host.includes("/") &&
    (!host.includes(":") || bracketed) &&
    /^[0-9]+$/.test(port) &&
    Number(port) >= 1 &&
    Number(port) <= 65535;
  if (!ok) {
    const hint = addr.includes("://") ? " (no scheme: drop http:// or https://)" : "";
    throw new RangeError(
      `${JSON.stringify(addr)}: expected HOST:PORT with a port from 1 to 65535, e.g. ${DEFAULT_ADDR}${hint}`,
    );
  }
  return addr;
}
