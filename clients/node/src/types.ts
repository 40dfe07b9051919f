// What the client hands back and takes: plain values, never protobuf messages; a value never
// reaches util.inspect (console.log) or JSON of an error.

import { inspect } from "node:util";

import { PdvaultError } from "./errors";

/** One value to tokenize: text or bytes; `cardToken` asks for a 16-digit, Luhn-valid token. */
export interface Field {
  readonly category: string;
  readonly value: string | Uint8Array;
  readonly cardToken?: boolean;
}

export interface Tokenized {
  readonly token: string;
  readonly category: string;
}

/** The legal exceptions a request may state (token_service.proto `LegalBasis`); audited. */
export type LegalBasisName = "law_or_regulation" | "public_interest" | "public_function" | "legitimate_rights";

/** One token's result: `value` (full view), `masked`, or `error` (an exception, not thrown). */
export class Detokenized {
  constructor(
    readonly token: string,
    readonly category: string,
    readonly value?: string | Buffer,
    readonly masked?: string,
    readonly error?: PdvaultError,
  ) {}

  get ok(): boolean {
    return this.error === undefined;
  }

  /** console.log and util.inspect show the token and the outcome, never the value. */
  [inspect.custom](): string {
    const shown = this.value === undefined ? "" : ", value: <redacted>";
    const masked = this.masked === undefined ? "" : `, masked: ${JSON.stringify(this.masked)}`;
    const error = this.error === undefined ? "" : `, error: ${this.error.message}`;
    return `Detokenized { token: ${JSON.stringify(this.token)}, category: ${JSON.stringify(this.category)}${shown}${masked}${error} }`;
  }
}

// -- documents (DocumentService) ----------------------------------------------------------------
// Enumerations are the API's names in lower case without their prefix: a document type is
// `passport` (DOCUMENT_TYPE_PASSPORT), a variant `sanitized`, a scan state `not_scanned`.

/** One copy of a document: `original` or `sanitized` (images without metadata). */
export interface VariantInfo {
  readonly variant: string;
  readonly mediaType: string;
  readonly size: number;
}

/**
 * The retention rule a document is kept under. `rule` is empty when its type has no rule (kept
 * until its subject is deleted); `dueAt` is undefined while the period has not started.
 */
export interface Retention {
  readonly rule: string;
  readonly trigger: string;
  readonly keep: string;
  readonly then: string;
  readonly legal: boolean;
  readonly dueAt: Date | undefined;
  readonly source: string;
}

export interface LegalHold {
  readonly holdId: string;
  readonly reason: string;
  readonly placedBy: string;
  readonly placedAt: Date | undefined;
}

/**
 * A document's metadata, never its content. `subject` is empty for a document kept after its
 * subject's deletion (`retained`); `verifiedAt` is undefined until MarkDocumentVerified.
 */
export interface Document {
  readonly id: string;
  readonly subject: string;
  readonly subjectDigest: string;
  readonly type: string;
  readonly mediaType: string;
  readonly createdAt: Date | undefined;
  readonly uploadedBy: string;
  readonly scanState: string;
  readonly scanEngine: string;
  readonly variants: readonly VariantInfo[];
  readonly retention: Retention;
  readonly holds: readonly LegalHold[];
  readonly verifiedAt: Date | undefined;
  readonly retained: boolean;
  readonly pages: number;
  readonly insurerNumberMasked: boolean;
}

export interface DeletedDocument {
  readonly documentId: string;
  readonly destroyedAt: Date | undefined;
}

/** What one retention sweep did (SweepRetentionResponse). */
export interface Sweep {
  readonly sweepId: string;
  readonly documentsDestroyed: number;
  readonly originalsDestroyed: number;
  readonly documentsHeld: number;
  readonly valuesErased: number;
  readonly blobsDeleted: number;
  readonly retentionKeysDestroyed: number;
  readonly documentsRedestroyed: number;
}
