// Identity documents against a live pdv serve, as a KYC flow streams them.

import assert from "node:assert/strict";
import { createHash } from "node:crypto";
import { mkdtempSync, readFileSync, rmSync, statSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { PassThrough, Readable, Writable } from "node:stream";
import { after, describe, test } from "node:test";

import { InvalidArgumentError, PermissionDeniedError, UploadAbortedError } from "../src";
import { client, png, subject } from "./live";

/** A Writable that keeps what it is given, slowly enough to exercise backpressure. */
class Sink extends Writable {
  readonly parts: Buffer[] = [];
  constructor() {
    super({ highWaterMark: 16 });
  }
  override _write(chunk: Buffer, _encoding: BufferEncoding, done: (error?: Error | null) => void): void {
    this.parts.push(chunk);
    setImmediate(done);
  }
  get bytes(): Buffer {
    return Buffer.concat(this.parts);
  }
}

describe("documents", () => {
  const kyc = client("kyc");
  const shipping = client("shipping");
  const dir = mkdtempSync(join(tmpdir(), "pdvault-node-docs-"));
  after(() => {
    kyc.close();
    shipping.close();
    rmSync(dir, { recursive: true, force: true });
  });

  test("a PNG streamed in from a Readable comes back whole into a Writable and a file", async () => {
    const content = png(120, 90);
    const user = subject("kyc");
    const sent: number[] = [];
    // A stream of unknown origin, in small pieces, its size given: sent as it is read.
    const source = Readable.from(
      (function* () {
        for (let at = 0; at < content.length; at += 100) yield content.subarray(at, at + 100);
      })(),
    );
    const stored = await kyc.documents().upload(user, "drivers_license", source, {
      size: content.length,
      sha256: createHash("sha256").update(content).digest("hex"),
      chunkSize: 256,
      progress: (s) => sent.push(s),
    });
    assert.match(stored.id, /^doc_/);
    assert.equal(stored.subject, user);
    assert.equal(stored.type, "drivers_license");
    assert.equal(stored.mediaType, "image/png");
    assert.equal(stored.variants.find((v) => v.variant === "original")?.size, content.length);
    assert.equal(sent.at(-1), content.length);
    assert.ok(sent.length > 1);

    const sink = new Sink();
    const found = await kyc.documents().download(stored.id, "identity_verification", sink);
    assert.equal(found.id, stored.id);
    assert.ok(sink.bytes.equals(content));

    const path = join(dir, "licence.png");
    await kyc.documents().download(stored.id, "identity_verification", path);
    assert.ok(readFileSync(path).equals(content));
    assert.equal(statSync(path).mode & 0o777, 0o600);
    await assert.rejects(
      kyc.documents().download(stored.id, "identity_verification", path, { overwrite: false }),
      (err: NodeJS.ErrnoException) => err.code === "EEXIST",
    );

    // The sanitized copy is a PNG too (re-encoded without metadata).
    const opened = await kyc.documents().open(stored.id, "identity_verification", { variant: "sanitized" });
    const parts: Buffer[] = [];
    for await (const part of opened.content) parts.push(part as Buffer);
    assert.equal(Buffer.concat(parts).subarray(1, 4).toString("latin1"), "PNG");

    const listed = await kyc.documents().show(stored.id);
    assert.equal(listed.id, stored.id);
  });

  test("a file path is uploaded from disk, and a stream of unknown size is collected first", async () => {
    const content = png(30, 20);
    const path = join(dir, "passport.png");
    writeFileSync(path, content);
    const user = subject("kyc-file");
    const fromFile = await kyc.documents().upload(user, "passport", path);
    const fromStream = await kyc.documents().upload(user, "passport", Readable.from([content]));
    assert.notEqual(fromFile.id, fromStream.id);
    const sink = new PassThrough();
    const parts: Buffer[] = [];
    sink.on("data", (part: Buffer) => parts.push(part));
    await kyc.documents().download(fromStream.id, "identity_verification", sink, { end: true });
    assert.ok(Buffer.concat(parts).equals(content));
  });

  test("a refused read and a refused upload are decoded", async () => {
    const user = subject("kyc-refused");
    const stored = await kyc.documents().upload(user, "passport", png(10, 10));
    await assert.rejects(
      shipping.documents().download(stored.id, "product_shipping", new Sink()),
      (err: unknown) => err instanceof PermissionDeniedError && err.reason !== "",
    );
    // Bytes that are no image: refused by the server, which keeps nothing.
    await assert.rejects(
      kyc.documents().upload(user, "passport", Buffer.from("\x89PNG not really"), { mediaType: "image/png" }),
      (err: unknown) => err instanceof InvalidArgumentError && err.violations.length > 0,
    );
    // A stream that gives fewer bytes than it declared: stopped here, before the last chunk.
    const content = png(10, 10);
    await assert.rejects(
      kyc.documents().upload(user, "passport", Readable.from([content]), { size: content.length + 5 }),
      UploadAbortedError,
    );
    const ops = client("ops");
    try {
      assert.deepEqual(
        (await ops.documents().list(user)).map((d) => d.id),
        [stored.id],
      );
    } finally {
      ops.close();
    }
  });
});
