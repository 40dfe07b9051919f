// The DocumentService through a Client: identity documents streamed in and out, from and to
// Node streams and files (the Python client's documents.py).
//
// A document from a file or a stream whose size is known never sits whole in this process's
// memory: a file is read twice, a chunk at a time (once to hash it, once to send it); a stream
// is sent as it is read. A download writes each chunk as it arrives. No file name is ever sent:
// the API has no field for one, and the server never learns it.

import { createHash, randomBytes } from "node:crypto";
import { once } from "node:events";
import { createReadStream } from "node:fs";
import { link, open, rename, stat, unlink } from "node:fs/promises";
import { basename, dirname, join } from "node:path";
import { Readable, Writable } from "node:stream";

import { CallOptions, ClientReadableStream, Metadata } from "@grpc/grpc-js";

import { Caller, isServiceError, unary } from "./call";
import { document, documentTypeValue, legalBasisValue, legalHold, variantValue } from "./convert";
import { Code, DataLossError, PdvaultError, fromCallError } from "./errors";
import {
  DocumentServiceClient,
  GetDocumentRequest,
  GetDocumentResponse,
  UploadDocumentRequest,
  UploadDocumentResponse,
  UploadHeader,
} from "./gen/pdvault/v1/document_service";
import { DeletedDocument, Document, LegalBasisName, LegalHold, Sweep } from "./types";

export const UPLOAD_CHUNK_BYTES = 64 * 1024;
/** The API's limit per chunk, either way (document_service.proto). */
export const MAX_CHUNK_BYTES = 256 * 1024;
/** The default policy's largest document: what a stream of unknown size may be collected to. */
export const MAX_BUFFERED_BYTES = 20 * 1024 * 1024;

// What a document's first bytes are when it is one of the three media types pdvault accepts.
// The server decides from the whole content; this only fills in the header's declaration.
const SIGNATURES: readonly (readonly [Buffer, string])[] = [
  [Buffer.from([0xff, 0xd8, 0xff]), "image/jpeg"],
  [Buffer.from([0x89, 0x50, 0x4e, 0x47]), "image/png"],
  [Buffer.from("%PDF-"), "application/pdf"],
];
const HEAD_BYTES = Math.max(...SIGNATURES.map(([magic]) => magic.length));

/** image/jpeg, image/png or application/pdf from a document's first bytes; undefined if neither. */
export function guessMediaType(head: Uint8Array): string | undefined {
  const bytes = Buffer.from(head.buffer, head.byteOffset, head.byteLength);
  return SIGNATURES.find(([magic]) => bytes.subarray(0, magic.length).equals(magic))?.[1];
}

/** `progress(sentBytes, totalBytes)`, called as each chunk of an upload is handed to gRPC. */
export type Progress = (sent: number, total: number) => void;

/**
 * What an upload reads: a file's path (read twice: to hash it, then to send it), the bytes
 * themselves, or a stream (a Readable, or any async iterable of bytes) read once.
 */
export type UploadSource = string | Uint8Array | Readable | AsyncIterable<Uint8Array>;

export interface UploadOptions {
  /** image/jpeg, image/png or application/pdf; guessed from the first bytes when left out. */
  mediaType?: string;
  /** Health insurance cards: the uploader states the insurer number is masked. Audited. */
  insurerNumberMasked?: boolean;
  /**
   * A stream's size in bytes: with it the stream is sent as it is read; without it the stream
   * is collected in memory first (up to `maxBufferedBytes`), since the header declares the size.
   */
  size?: number;
  /** A stream's SHA-256 (32 bytes, or 64 hex digits): checked here before the last chunk goes,
   * and by the server. Computed for a path or bytes. */
  sha256?: Uint8Array | string;
  progress?: Progress;
  /** 1 byte to 256 KiB (64 KiB). */
  chunkSize?: number;
  /** This call's deadline in ms (the client's by default): a large document over a slow link may
   * need more than a token call. */
  timeoutMs?: number;
  /** The most a stream of unknown size may hold in memory (20 MiB). */
  maxBufferedBytes?: number;
}

export interface DownloadOptions {
  /** `original` (the default) or `sanitized` (images re-encoded without metadata). */
  variant?: string;
  /** A legal exception (audited); required to read a document kept after its subject's deletion. */
  legalBasis?: LegalBasisName;
  /** A ticket or order number, kept in the audit log. */
  justification?: string;
  /** For the subject's disclosure request (operators), instead of a purpose: give purpose "". */
  disclosure?: boolean;
  /** This call's deadline in ms, the whole transfer included (the client's by default). */
  timeoutMs?: number;
}

export interface DownloadToOptions extends DownloadOptions {
  /** A path target: false refuses to replace an existing file (an EEXIST error). Default true. */
  overwrite?: boolean;
  /** A stream target: end it once every byte is written. Default false. */
  end?: boolean;
}

/** A document being read: its metadata, and its content as a Readable of Buffers. */
export interface OpenedDocument {
  readonly document: Document;
  /**
   * The content, chunk by chunk as it arrives. It fails with a PdvaultError (DataLossError when
   * the server found stored content that fails its integrity check, or when fewer bytes came than
   * announced): discard what it gave. Destroying it cancels the call.
   */
  readonly content: Readable;
}

/**
 * The DocumentService, through a Client. Unary calls follow the client's retry rule
 * (UNAVAILABLE, within the deadline), except `hold`, which is never retried: a retry after a
 * lost answer would place a second hold. Every error is a PdvaultError of the usual classes.
 */
export class DocumentClient {
  constructor(
    private readonly caller: Caller,
    private readonly stub: DocumentServiceClient,
  ) {}

  // -- the streams --------------------------------------------------------------------------------

  /**
   * Store one document of `subject` and return it as stored. `documentType` is one of
   * DOCUMENT_TYPES (passport, drivers_license, ...).
   *
   * Never retried, not even on UNAVAILABLE: the header carries no request id, so a retry after
   * an answer lost on the way back would store the document twice. After an UnavailableError,
   * list the subject's documents before uploading again. If the source changes, fails or gives
   * more or fewer bytes than declared, the upload stops before its last chunk, so the server
   * keeps nothing, and that error is thrown.
   */
  async upload(
    subject: string,
    documentType: string,
    source: UploadSource,
    options: UploadOptions = {},
  ): Promise<Document> {
    const chunkSize = options.chunkSize ?? UPLOAD_CHUNK_BYTES;
    if (!Number.isInteger(chunkSize) || chunkSize < 1 || chunkSize > MAX_CHUNK_BYTES) {
      throw new RangeError(`chunkSize must be 1 to ${MAX_CHUNK_BYTES} bytes`);
    }
    const kind = documentTypeValue(documentType);
    const plan = await planUpload(source, options, chunkSize);
    if (plan.size === 0) throw new RangeError("the document is empty");
    const mediaType = options.mediaType ?? guessMediaType(plan.head);
    if (mediaType === undefined) {
      throw new RangeError(
        "the content does not begin as a JPEG, PNG or PDF does, the only media types pdvault " +
          "accepts (give mediaType to let the server decide)",
      );
    }
    const header: UploadHeader = {
      subject,
      documentType: kind,
      mediaType,
      size: plan.size,
      sha256: plan.sha256 ?? Buffer.alloc(0),
      insurerNumberMasked: options.insurerNumberMasked ?? false,
    };
    const answer = await this.caller.call(
      (h: UploadHeader, md: Metadata, opts: CallOptions) => this.send(h, plan, chunkSize, options.progress, md, opts),
      header,
      { retry: false, timeoutMs: options.timeoutMs },
    );
    if (answer.document === undefined) throw new PdvaultError(Code.UNKNOWN, "the upload answered no document");
    return document(answer.document);
  }

  private async send(
    header: UploadHeader,
    plan: UploadPlan,
    chunkSize: number,
    progress: Progress | undefined,
    metadata: Metadata,
    options: CallOptions,
  ): Promise<UploadDocumentResponse> {
    let call: ReturnType<DocumentServiceClient["uploadDocument"]> | undefined;
    const answer = new Promise<UploadDocumentResponse>((resolve, reject) => {
      call = this.stub.uploadDocument(metadata, options, (error, response) => {
        if (error) reject(error);
        else resolve(response);
      });
    });
    if (call === undefined) throw new Error("unreachable");
    const stream = call;
    answer.catch(() => undefined); // observed below; a local failure must not leave it unhandled
    const write = async (message: UploadDocumentRequest): Promise<void> => {
      if (!stream.write(message)) await Promise.race([once(stream, "drain"), answer]);
    };
    try {
      await write({ part: { $case: "header", value: header } });
      const check = createHash("sha256");
      let sent = 0;
      for await (const chunk of rechunk(plan.chunks(), chunkSize)) {
        if (sent + chunk.length > plan.size) throw changed(sent + chunk.length, plan.size, "more than");
        check.update(chunk);
        sent += chunk.length;
        if (sent === plan.size && plan.sha256 !== undefined && !check.digest().equals(plan.sha256)) {
          throw changed(sent, plan.size, "other bytes than");
        }
        await write({ part: { $case: "chunk", value: chunk } });
        progress?.(sent, plan.size);
      }
      if (sent < plan.size) throw changed(sent, plan.size, "fewer bytes than");
    } catch (err) {
      stream.cancel(); // the server gets less than the declared size: it keeps nothing
      if (isServiceError(err)) throw err; // the call itself failed (the answer came early)
      throw err instanceof Error ? new UploadAbortedError(err) : err;
    }
    stream.end();
    return answer;
  }

  /**
   * Read one variant of a document for `purpose`: its metadata, and its content as a Readable.
   * Retried on UNAVAILABLE as a unary call is, only until the metadata has arrived.
   */
  async open(documentId: string, purpose: string, options: DownloadOptions = {}): Promise<OpenedDocument> {
    const variant = options.variant ?? "original";
    const request: GetDocumentRequest = {
      documentId,
      purpose,
      variant: variantValue(variant),
      legalBasis: legalBasisValue(options.legalBasis),
      justification: options.justification ?? "",
      disclosure: options.disclosure ?? false,
    };
    const begun = await this.caller.call(
      async (req: GetDocumentRequest, md: Metadata, opts: CallOptions) => {
        const call = this.stub.getDocument(req, md, opts);
        const messages = call[Symbol.asyncIterator]() as AsyncIterator<GetDocumentResponse>;
        let first: IteratorResult<GetDocumentResponse>;
        try {
          first = await messages.next(); // a gRPC error here may be retried
        } catch (err) {
          call.cancel();
          throw err;
        }
        if (first.done || first.value.part?.$case !== "metadata") {
          call.cancel();
          throw new PdvaultError(Code.UNKNOWN, "the download did not begin with the document's metadata");
        }
        return { call, messages, found: document(first.value.part.value) };
      },
      request,
      { timeoutMs: options.timeoutMs },
    );
    const expected = begun.found.variants.find((v) => v.variant === variant)?.size;
    return {
      document: begun.found,
      content: Readable.from(content(begun.call, begun.messages, expected), { objectMode: false }),
    };
  }

  /**
   * Read one variant of a document for `purpose` into `target`, a path or a Writable, as it
   * arrives, and return its metadata.
   *
   * A path is written through a temporary file beside it (mode 0600), put in place only once
   * every byte has arrived and the count matches the metadata; on any error (notably
   * DataLossError) the temporary file is deleted and the error thrown. With `overwrite: false`
   * an existing path is refused (EEXIST), before the call and again when the file is put in
   * place. A Writable is written as the chunks come (with its backpressure): on an error,
   * discard what it received.
   */
  async download(
    documentId: string,
    purpose: string,
    target: string | Writable,
    options: DownloadToOptions = {},
  ): Promise<Document> {
    if (typeof target !== "string") {
      const opened = await this.open(documentId, purpose, options);
      await drainInto(opened.content, target, options.end ?? false);
      return opened.document;
    }
    const overwrite = options.overwrite ?? true;
    if (!overwrite && (await exists(target))) throw existsError(target);
    const part = join(dirname(target), `.${basename(target)}.${randomBytes(6).toString("hex")}.part`);
    const file = await open(part, "wx", 0o600);
    let done = false;
    try {
      let found: Document;
      try {
        const opened = await this.open(documentId, purpose, options);
        found = opened.document;
        for await (const chunk of opened.content as AsyncIterable<Buffer>) {
          await file.write(chunk);
        }
        await file.sync();
      } finally {
        await file.close();
      }
      await putInPlace(part, target, overwrite);
      done = true;
      return found;
    } finally {
      if (!done) await unlink(part).catch(() => undefined);
    }
  }

  // -- the unary methods --------------------------------------------------------------------------

  /** A document's metadata: type, media type, sizes, scan state, retention, holds. */
  async show(documentId: string): Promise<Document> {
    const answer = await this.caller.call(
      unary(this.stub, this.stub.getDocumentMetadata),
      { documentId },
    );
    if (answer.document === undefined) throw new PdvaultError(Code.UNKNOWN, "no document in the answer");
    return document(answer.document);
  }

  /** Every document of `subject`, oldest first (all pages; `pageSize` per call, 0 for the
   * server's default). */
  async list(subject: string, pageSize = 0): Promise<Document[]> {
    const found: Document[] = [];
    let pageToken = "";
    do {
      const answer = await this.caller.call(
        unary(this.stub, this.stub.listDocuments),
        { subject, pageSize, pageToken },
      );
      found.push(...answer.documents.map(document));
      pageToken = answer.nextPageToken;
    } while (pageToken);
    return found;
  }

  /** Shred one document. Retried on UNAVAILABLE: if an earlier attempt did delete it, the retry
   * answers NotFoundError (the document is gone either way). */
  async delete(documentId: string): Promise<DeletedDocument> {
    const answer = await this.caller.call(
      unary(this.stub, this.stub.deleteDocument),
      { documentId },
    );
    return { documentId: answer.documentId, destroyedAt: answer.destroyedAt };
  }

  /** Place a legal hold (never retried: a retry could place two). */
  async hold(documentId: string, reason: string): Promise<LegalHold> {
    const answer = await this.caller.call(
      unary(this.stub, this.stub.holdDocument),
      { documentId, reason },
      { retry: false },
    );
    if (answer.hold === undefined) throw new PdvaultError(Code.UNKNOWN, "no hold in the answer");
    return legalHold(answer.hold);
  }

  /** Release one hold, or every hold of the document; how many were released. */
  async release(documentId: string, holdId = ""): Promise<number> {
    const answer = await this.caller.call(
      unary(this.stub, this.stub.releaseDocument),
      { documentId, holdId },
    );
    return answer.released;
  }

  /** Record that the verification flow checked it; the first call counts. */
  async markVerified(documentId: string): Promise<Document> {
    const answer = await this.caller.call(
      unary(this.stub, this.stub.markDocumentVerified),
      { documentId },
    );
    if (answer.document === undefined) throw new PdvaultError(Code.UNKNOWN, "no document in the answer");
    return document(answer.document);
  }

  /** Destroy now what the retention rules say is due (idempotent). */
  async sweep(): Promise<Sweep> {
    const a = await this.caller.call(unary(this.stub, this.stub.sweepRetention), {});
    return {
      sweepId: a.sweepId,
      documentsDestroyed: a.documentsDestroyed,
      originalsDestroyed: a.originalsDestroyed,
      documentsHeld: a.documentsHeld,
      valuesErased: a.valuesErased,
      blobsDeleted: a.blobsDeleted,
      retentionKeysDestroyed: a.retentionKeysDestroyed,
      documentsRedestroyed: a.documentsRedestroyed,
    };
  }
}

/**
 * An upload stopped on this side (the source failed or changed, `progress` threw): the server
 * kept nothing. `cause` is what went wrong. Never retried.
 */
export class UploadAbortedError extends Error {
  constructor(cause: Error) {
    super(`the upload was stopped, nothing was kept: ${cause.message}`, { cause });
    this.name = "UploadAbortedError";
  }
}

// -- the upload's plan ------------------------------------------------------------------------------

interface UploadPlan {
  readonly size: number;
  readonly sha256: Buffer | undefined;
  readonly head: Buffer;
  /** The content, from the start: called once, when the header has gone. */
  readonly chunks: () => AsyncIterable<Uint8Array>;
}

async function planUpload(source: UploadSource, options: UploadOptions, chunkSize: number): Promise<UploadPlan> {
  if (typeof source === "string") return planFile(source, chunkSize);
  if (source instanceof Uint8Array) return planBytes(Buffer.from(source.buffer, source.byteOffset, source.byteLength));
  const given = options.sha256 === undefined ? undefined : sha256Bytes(options.sha256);
  if (options.size === undefined) {
    return planBytes(await collect(source, options.maxBufferedBytes ?? MAX_BUFFERED_BYTES), given);
  }
  if (!Number.isSafeInteger(options.size) || options.size < 0) throw new RangeError("size must be a whole number of bytes");
  // The header names the media type, so the first bytes are read before it goes.
  const iterator = source[Symbol.asyncIterator]();
  const pending: Buffer[] = [];
  let headLength = 0;
  let ended = false;
  while (headLength < HEAD_BYTES) {
    const next = await iterator.next();
    if (next.done) {
      ended = true;
      break;
    }
    const chunk = toBuffer(next.value);
    pending.push(chunk);
    headLength += chunk.length;
  }
  async function* rest(): AsyncIterable<Uint8Array> {
    yield* pending;
    if (ended) return;
    for (;;) {
      const next = await iterator.next();
      if (next.done) return;
      yield toBuffer(next.value);
    }
  }
  return { size: options.size, sha256: given, head: Buffer.concat(pending).subarray(0, HEAD_BYTES), chunks: rest };
}

function planBytes(bytes: Buffer, given?: Buffer): UploadPlan {
  const sha256 = createHash("sha256").update(bytes).digest();
  if (given !== undefined && !given.equals(sha256)) throw new RangeError("the content does not match the sha256 given");
  return {
    size: bytes.length,
    sha256,
    head: bytes.subarray(0, HEAD_BYTES),
    chunks: async function* () {
      yield bytes;
    },
  };
}

async function planFile(path: string, chunkSize: number): Promise<UploadPlan> {
  const digest = createHash("sha256");
  let size = 0;
  const heads: Buffer[] = [];
  for await (const chunk of createReadStream(path, { highWaterMark: chunkSize }) as AsyncIterable<Buffer>) {
    if (size < HEAD_BYTES) heads.push(chunk.subarray(0, HEAD_BYTES));
    digest.update(chunk);
    size += chunk.length;
  }
  return {
    size,
    sha256: digest.digest(),
    head: Buffer.concat(heads).subarray(0, HEAD_BYTES),
    chunks: () => createReadStream(path, { highWaterMark: chunkSize }),
  };
}

async function collect(source: AsyncIterable<Uint8Array>, limit: number): Promise<Buffer> {
  const parts: Buffer[] = [];
  let size = 0;
  for await (const chunk of source) {
    size += chunk.length;
    if (size > limit) {
      throw new RangeError(
        `the stream is larger than ${limit} bytes: give its size to send it as it is read`,
      );
    }
    parts.push(toBuffer(chunk));
  }
  return Buffer.concat(parts);
}

function toBuffer(chunk: Uint8Array | string): Buffer {
  if (typeof chunk === "string") throw new TypeError("a document stream must give bytes, not text");
  return Buffer.isBuffer(chunk) ? chunk : Buffer.from(chunk.buffer, chunk.byteOffset, chunk.byteLength);
}

function sha256Bytes(value: Uint8Array | string): Buffer {
  const bytes = typeof value === "string" ? Buffer.from(value, "hex") : Buffer.from(value);
  if (bytes.length !== 32) throw new RangeError("sha256 must be 32 bytes (64 hex digits)");
  return bytes;
}

/** The content again, in pieces of at most `size` bytes. */
async function* rechunk(source: AsyncIterable<Uint8Array>, size: number): AsyncIterable<Buffer> {
  for await (const chunk of source) {
    const bytes = toBuffer(chunk);
    for (let at = 0; at < bytes.length; at += size) yield bytes.subarray(at, at + size);
  }
}

function changed(sent: number, total: number, how: string): Error {
  return new Error(
    `the source gave ${how} the ${total} bytes declared (at byte ${sent}): upload it again`,
  );
}

// -- the download --------------------------------------------------------------------------------------

async function* content(
  call: ClientReadableStream<GetDocumentResponse>,
  messages: AsyncIterator<GetDocumentResponse>,
  expected: number | undefined,
): AsyncGenerator<Buffer> {
  let received = 0;
  try {
    for (;;) {
      let next: IteratorResult<GetDocumentResponse>;
      try {
        next = await messages.next();
      } catch (err) {
        throw fromCallError(err);
      }
      if (next.done) break;
      if (next.value.part?.$case !== "chunk") {
        throw new PdvaultError(Code.UNKNOWN, "the download sent its metadata twice");
      }
      received += next.value.part.value.length;
      yield next.value.part.value;
    }
    if (expected !== undefined && received !== expected) {
      throw new DataLossError(
        Code.DATA_LOSS,
        `the download ended after ${received} of the ${expected} bytes announced: discard what was received`,
      );
    }
  } finally {
    call.cancel(); // a no-op once the stream has ended; else stops it
  }
}

/** Every chunk of `source` into `sink`, with its backpressure; a sink's error is thrown. */
async function drainInto(source: Readable, sink: Writable, end: boolean): Promise<void> {
  let failed: Error | undefined;
  const onError = (err: Error): void => {
    failed = err;
    source.destroy();
  };
  sink.on("error", onError);
  try {
    for await (const chunk of source as AsyncIterable<Buffer>) {
      if (failed !== undefined) throw failed;
      if (!sink.write(chunk)) {
        await Promise.race([once(sink, "drain"), once(sink, "close")]);
      }
      if (failed !== undefined) throw failed;
    }
    if (end) {
      sink.end();
      await once(sink, "finish");
    }
  } catch (err) {
    throw failed ?? err;
  } finally {
    sink.off("error", onError);
  }
}

async function exists(path: string): Promise<boolean> {
  try {
    await stat(path);
    return true;
  } catch {
    return false;
  }
}

function existsError(path: string): NodeJS.ErrnoException {
  const err: NodeJS.ErrnoException = new Error(`EEXIST: file already exists, ${JSON.stringify(path)}`);
  err.code = "EEXIST";
  err.path = path;
  return err;
}

async function putInPlace(part: string, path: string, overwrite: boolean): Promise<void> {
  if (overwrite) {
    await rename(part, path);
    return;
  }
  try {
    await link(part, path); // fails if `path` appeared meanwhile, where rename would not
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code === "EEXIST") throw existsError(path);
    if (await exists(path)) throw existsError(path); // a file system without hard links
    await rename(part, path);
    return;
  }
  await unlink(part);
}
