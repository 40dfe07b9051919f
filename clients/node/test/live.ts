// The live server the tests call: PDV_ADDR, and the demo callers' keys from
// PDV_DATA_DIR/dev-credentials.json (scripts/test.mjs sets both, starting a server if needed).

import { readFileSync } from "node:fs";
import { join } from "node:path";
import { deflateSync } from "node:zlib";

import { Client, ClientOptions } from "../src";

export type DemoCaller = "payment" | "shipping" | "support" | "kyc" | "legal" | "ops";

function required(name: string): string {
  const value = process.env[name];
  if (!value) throw new Error(`${name} is not set: run the tests with \`npm test\``);
  return value;
}

export function addr(): string {
  return required("PDV_ADDR");
}

export function apiKey(caller: DemoCaller): string {
  const keys = JSON.parse(readFileSync(join(required("PDV_DATA_DIR"), "dev-credentials.json"), "utf8")) as Record<
    string,
    string
  >;
  const key = keys[caller];
  if (key === undefined) throw new Error(`no demo key for ${caller}`);
  return key;
}

/** A client for one demo caller of the live server. */
export function client(caller: DemoCaller, options: ClientOptions = {}): Client {
  return new Client(addr(), { apiKey: apiKey(caller), timeoutMs: 15_000, ...options });
}

/** A subject id of this run's own, so that a reused server's earlier data never interferes. */
export function subject(name: string): string {
  return `node-${name}-${process.pid}-${Date.now().toString(36)}`;
}

// -- a small valid PNG (as tests/samples.py makes them: real pixels the server can decode) -------

const CRC_TABLE = Array.from({ length: 256 }, (_, n) => {
  let c = n;
  for (let k = 0; k < 8; k++) c = c & 1 ? 0xedb88320 ^ (c >>> 1) : c >>> 1;
  return c >>> 0;
});

function crc32(data: Buffer): number {
  let c = 0xffffffff;
  for (const byte of data) c = (CRC_TABLE[(c ^ byte) & 0xff] as number) ^ (c >>> 8);
  return (c ^ 0xffffffff) >>> 0;
}

function chunk(kind: string, data: Buffer): Buffer {
  const length = Buffer.alloc(4);
  length.writeUInt32BE(data.length);
  const body = Buffer.concat([Buffer.from(kind, "latin1"), data]);
  const crc = Buffer.alloc(4);
  crc.writeUInt32BE(crc32(body));
  return Buffer.concat([length, body, crc]);
}

/** An RGB PNG, top half red and bottom half blue, `width` x `height` pixels. */
export function png(width = 60, height = 40): Buffer {
  const header = Buffer.alloc(13);
  header.writeUInt32BE(width, 0);
  header.writeUInt32BE(height, 4);
  header.set([8, 2, 0, 0, 0], 8); // 8 bits, RGB, deflate, no filter, no interlace
  const rows: Buffer[] = [];
  for (let y = 0; y < height; y++) {
    const row = Buffer.alloc(1 + width * 3); // filter byte 0, then the pixels
    const [r, g, b] = y < height / 2 ? [220, 20, 20] : [20, 20, 220];
    for (let x = 0; x < width; x++) row.set([r, g, b], 1 + x * 3);
    rows.push(row);
  }
  return Buffer.concat([
    Buffer.from([0x89, 0x50, 0x4e, 0x47, 0x0d, 0x0a, 0x1a, 0x0a]),
    chunk("IHDR", header),
    chunk("IDAT", deflateSync(Buffer.concat(rows))),
    chunk("IEND", Buffer.alloc(0)),
  ]);
}
