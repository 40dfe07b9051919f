// A KYC flow on pdvault: stream an identity document in (from a file, or from an upload that is
// still arriving), and stream it out to a reviewer. Run:
//   PDV_ADDR=127.0.0.1:50051 PDV_API_KEY=pdv_... node dist/examples/kyc-upload.js licence.jpg

import { Readable, Writable } from "node:stream";

import { Client, Document, FailedPreconditionError, InvalidArgumentError } from "@pdvault/client";

/**
 * From a file: read twice, 64 KiB at a time (to hash it, then to send it), never whole in
 * memory. The media type (JPEG, PNG or PDF) is guessed from its first bytes; no file name is sent.
 */
export function uploadLicence(vault: Client, userId: string, path: string): Promise<Document> {
  return vault.documents().upload(userId, "drivers_license", path, { timeoutMs: 60_000 });
}

/**
 * From a stream, such as an HTTP request body, whose size is known (Content-Length): sent as it
 * arrives. With `sha256` (when the client sent one) a changed body is stopped before its last
 * chunk, and the server keeps nothing.
 */
export function uploadFromRequest(
  vault: Client,
  userId: string,
  body: Readable,
  size: number,
  sha256?: string,
): Promise<Document> {
  return vault.documents().upload(userId, "passport", body, { size, sha256, timeoutMs: 60_000 });
}

/** To a reviewer: the sanitized copy (no EXIF location), written to `out` as it arrives. */
export function showToReviewer(vault: Client, documentId: string, caseId: string, out: Writable): Promise<Document> {
  return vault.documents().download(documentId, "identity_verification", out, {
    variant: "sanitized",
    justification: `case ${caseId}`,
    end: true,
  });
}

async function main(): Promise<void> {
  const path = process.argv[2];
  if (!path) throw new Error("usage: kyc-upload.js FILE");
  const vault = new Client(process.env.PDV_ADDR ?? "127.0.0.1:50051", { apiKey: process.env.PDV_API_KEY });
  try {
    const stored = await uploadLicence(vault, "user-42", path);
    console.log(stored.id, stored.mediaType, stored.variants.map((v) => `${v.variant}:${v.size}`).join(" "));
  } catch (err) {
    if (err instanceof InvalidArgumentError) {
      // document.media_type, document.image_bomb, document.malware ...: tell the user what to fix.
      console.error("refused:", err.violations.map((v) => v.rule).join(", ") || err.reason);
      process.exitCode = 3;
    } else if (err instanceof FailedPreconditionError) {
      console.error("not now:", err.reason);
      process.exitCode = 4;
    } else {
      throw err;
    }
  } finally {
    vault.close();
  }
}

if (require.main === module) {
  main().catch((err: unknown) => {
    console.error(err instanceof Error ? err.message : err);
    process.exit(1);
  });
}
