// The document streams' failure paths against a stub DocumentService in this process: what a
// live server does only when storage is damaged or the network fails.

import assert from "node:assert/strict";
import { existsSync, mkdtempSync, readdirSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { Readable } from "node:stream";
import { after, before, beforeEach, describe, test } from "node:test";

import {
  Metadata,
  Server,
  ServerCredentials,
  ServerReadableStream,
  ServerWritableStream,
  UntypedServiceImplementation,
  sendUnaryData,
} from "@grpc/grpc-js";

import { Client, Code, DataLossError, UploadAbortedError } from "../src";
import {
  Document,
  DocumentServiceService,
  DocumentVariant,
  GetDocumentRequest,
  GetDocumentResponse,
  UploadDocumentRequest,
  UploadDocumentResponse,
} from "../src/gen/pdvault/v1/document_service";

function stored(size: number): Document {
  return {
    documentId: "doc_stub",
    subject: "user-1",
    subjectDigest: "",
    documentType: 1,
    mediaType: "image/png",
    uploadedBy: "kyc",
    scanState: 0,
    scanEngine: "",
    variants: [{ variant: DocumentVariant.DOCUMENT_VARIANT_ORIGINAL, mediaType: "image/png", size }],
    holds: [],
    retained: false,
    pages: 0,
    insurerNumberMasked: false,
  };
}

const CONTENT = Buffer.concat([Buffer.from([0x89, 0x50, 0x4e, 0x47]), Buffer.alloc(1000, 7)]);

describe("document streams", () => {
  const server = new Server();
  const dir = mkdtempSync(join(tmpdir(), "pdvault-node-streams-"));
  let port = 0;
  // What the stub does next, and what it saw.
  let downloads: ("unavailable" | "data_loss" | "short" | "whole")[] = [];
  let uploads: { messages: UploadDocumentRequest[]; cancelled: boolean; ended: boolean }[] = [];

  before(async () => {
    const implementation: UntypedServiceImplementation = {
      getDocument(call: ServerWritableStream<GetDocumentRequest, GetDocumentResponse>) {
        const how = downloads.shift() ?? "whole";
        if (how === "unavailable") {
          call.emit("error", { code: Code.UNAVAILABLE, details: "draining", metadata: new Metadata() });
          return;
        }
        call.write({ part: { $case: "metadata", value: stored(CONTENT.length) } });
        call.write({ part: { $case: "chunk", value: CONTENT.subarray(0, 600) } });
        if (how === "data_loss") {
          call.emit("error", { code: Code.DATA_LOSS, details: "a segment failed its integrity check", metadata: new Metadata() });
          return;
        }
        if (how === "whole") call.write({ part: { $case: "chunk", value: CONTENT.subarray(600) } });
        call.end();
      },
      uploadDocument(
        call: ServerReadableStream<UploadDocumentRequest, UploadDocumentResponse>,
        done: sendUnaryData<UploadDocumentResponse>,
      ) {
        const seen = { messages: [] as UploadDocumentRequest[], cancelled: false, ended: false };
        uploads.push(seen);
        call.on("data", (m: UploadDocumentRequest) => seen.messages.push(m));
        call.on("cancelled", () => {
          seen.cancelled = true;
        });
        call.on("end", () => {
          seen.ended = true;
          const size = seen.messages.reduce((n, m) => n + (m.part?.$case === "chunk" ? m.part.value.length : 0), 0);
          done(null, { document: stored(size) });
        });
      },
    };
    server.addService(DocumentServiceService, implementation);
    port = await new Promise<number>((resolve, reject) =>
      server.bindAsync("127.0.0.1:0", ServerCredentials.createInsecure(), (err, p) => (err ? reject(err) : resolve(p))),
    );
  });
  beforeEach(() => {
    downloads = [];
    uploads = [];
  });
  after(() => {
    server.forceShutdown();
    rmSync(dir, { recursive: true, force: true });
  });

  const vault = (): Client => new Client(`127.0.0.1:${port}`, { apiKey: "k", sleep: async () => undefined });

  test("a download is retried on UNAVAILABLE until its metadata arrives", async () => {
    downloads = ["unavailable", "whole"];
    const client = vault();
    try {
      const opened = await client.documents().open("doc_stub", "identity_verification");
      const parts: Buffer[] = [];
      for await (const part of opened.content) parts.push(part as Buffer);
      assert.ok(Buffer.concat(parts).equals(CONTENT));
      assert.equal(downloads.length, 0);
    } finally {
      client.close();
    }
  });

  test("DATA_LOSS mid-stream, or fewer bytes than announced, leaves no file behind", async () => {
    const client = vault();
    try {
      for (const how of ["data_loss", "short"] as const) {
        downloads = [how];
        const path = join(dir, `${how}.png`);
        await assert.rejects(client.documents().download("doc_stub", "identity_verification", path), DataLossError);
        assert.equal(existsSync(path), false);
      }
      assert.deepEqual(readdirSync(dir), []); // no temporary file either
    } finally {
      client.close();
    }
  });

  test("an upload sends its header first, then chunks of at most chunkSize, then ends", async () => {
    const client = vault();
    try {
      const doc = await client.documents().upload("user-1", "passport", CONTENT, { chunkSize: 300 });
      assert.equal(doc.id, "doc_stub");
    } finally {
      client.close();
    }
    const [seen] = uploads;
    assert.ok(seen?.ended);
    const [header, ...chunks] = seen.messages;
    assert.equal(header?.part?.$case, "header");
    if (header?.part?.$case === "header") {
      assert.equal(header.part.value.size, CONTENT.length);
      assert.equal(header.part.value.mediaType, "image/png");
      assert.equal(header.part.value.sha256.length, 32);
    }
    assert.deepEqual(
      chunks.map((m) => (m.part?.$case === "chunk" ? m.part.value.length : -1)),
      [300, 300, 300, 104],
    );
  });

  test("a source that fails mid-way stops the upload before its end: the server keeps nothing", async () => {
    const client = vault();
    const failing = Readable.from(
      (async function* () {
        yield CONTENT.subarray(0, 500);
        throw new Error("the disk went away");
      })(),
    );
    try {
      await assert.rejects(
        client.documents().upload("user-1", "passport", failing, { size: CONTENT.length, chunkSize: 200 }),
        (err: unknown) => err instanceof UploadAbortedError && /the disk went away/.test(err.message),
      );
    } finally {
      client.close();
    }
    const [seen] = uploads;
    assert.equal(seen?.ended ?? false, false); // never half-closed: the server saw a cancel
  });
});
