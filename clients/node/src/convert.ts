// Between the library's values and the API's messages (the Python client's convert.py).

import { randomUUID } from "node:crypto";

import { fromStatus } from "./errors";
import {
  Document as DocumentMessage,
  DocumentType,
  DocumentVariant,
  LegalHold as LegalHoldMessage,
  ScanState,
} from "./gen/pdvault/v1/document_service";
import { Value } from "./gen/pdvault/v1/common";
import {
  DetokenizeRequest,
  DetokenizeResponse,
  LegalBasis,
  TokenFormat,
  TokenizeField,
  TokenizeRequest,
  TokenizeResponse,
} from "./gen/pdvault/v1/token_service";
import { Detokenized, Document, Field, LegalHold, Tokenized } from "./types";

type Enum = Record<string, string | number>;

/** The lower-case names of an enum's values without `prefix`, the zero value left out. */
function names(e: Enum, prefix: string): readonly string[] {
  return Object.keys(e)
    .filter((k) => k.startsWith(prefix) && !k.endsWith("_UNSPECIFIED"))
    .map((k) => k.slice(prefix.length).toLowerCase());
}

function enumValue(e: Enum, prefix: string, name: string, what: string, known: readonly string[]): number {
  const value = known.includes(name) ? e[prefix + name.toUpperCase()] : undefined;
  if (typeof value !== "number") {
    throw new RangeError(`unknown ${what} ${JSON.stringify(name)} (one of: ${known.join(", ")})`);
  }
  return value;
}

/**
 * `passport` for DOCUMENT_TYPE_PASSPORT; "" for the zero value; a number this client does not
 * know yet (a newer server) as its number, rather than failing the whole answer.
 */
function enumName(e: Enum, prefix: string, value: number): string {
  const name = e[value];
  if (typeof name !== "string" || name === "UNRECOGNIZED") return String(value);
  return name.endsWith("_UNSPECIFIED") ? "" : name.slice(prefix.length).toLowerCase();
}

const DOCUMENT_TYPE = "DOCUMENT_TYPE_";
const VARIANT = "DOCUMENT_VARIANT_";
const LEGAL_BASIS = "LEGAL_BASIS_";

/** The document types the API names, in its order: passport, drivers_license, ... */
export const DOCUMENT_TYPES = names(DocumentType, DOCUMENT_TYPE);
/** The copies of a document: original, sanitized. */
export const VARIANTS = names(DocumentVariant, VARIANT);
/** The legal bases a request may state: law_or_regulation, public_interest, ... */
export const LEGAL_BASES = names(LegalBasis, LEGAL_BASIS);

export function documentTypeValue(name: string): DocumentType {
  return enumValue(DocumentType, DOCUMENT_TYPE, name, "document type", DOCUMENT_TYPES);
}

export function variantValue(name: string): DocumentVariant {
  return enumValue(DocumentVariant, VARIANT, name, "variant", VARIANTS);
}

/** `law_or_regulation` ... as the API's enum; none (empty) is LEGAL_BASIS_UNSPECIFIED. */
export function legalBasisValue(name: string | undefined): LegalBasis {
  if (!name) return LegalBasis.LEGAL_BASIS_UNSPECIFIED;
  return enumValue(LegalBasis, LEGAL_BASIS, name, "legal basis", LEGAL_BASES);
}

export function valueMessage(value: string | Uint8Array): Value {
  if (typeof value === "string") return { kind: { $case: "text", value } };
  return { kind: { $case: "binary", value: Buffer.from(value) } };
}

/**
 * A request id is generated when none is given: the caller sends this same request on every
 * retry, so a retry after a timeout never creates a second set of tokens.
 */
export function tokenizeRequest(subject: string, fields: readonly Field[], requestId?: string): TokenizeRequest {
  return {
    subject,
    requestId: requestId ?? randomUUID(),
    fields: fields.map(
      (f): TokenizeField => ({
        category: f.category,
        value: valueMessage(f.value),
        tokenFormat: f.cardToken ? TokenFormat.TOKEN_FORMAT_CARD_NUMBER : TokenFormat.TOKEN_FORMAT_OPAQUE,
      }),
    ),
  };
}

export function tokenized(response: TokenizeResponse): Tokenized[] {
  return response.results.map((r) => ({ token: r.token, category: r.category }));
}

export function detokenizeRequest(
  tokens: readonly string[],
  purpose: string,
  justification: string,
  legalBasis: string | undefined,
): DetokenizeRequest {
  return { tokens: [...tokens], purpose, justification, legalBasis: legalBasisValue(legalBasis) };
}

export function detokenized(response: DetokenizeResponse): Detokenized[] {
  return response.results.map((r) => {
    switch (r.result?.$case) {
      case "error":
        return new Detokenized(r.token, r.category, undefined, undefined, fromStatus(r.result.value));
      case "masked":
        return new Detokenized(r.token, r.category, undefined, r.result.value);
      case "value": {
        const kind = r.result.value.kind;
        const value = kind?.$case === "binary" ? kind.value : (kind?.value ?? "");
        return new Detokenized(r.token, r.category, value);
      }
      default:
        return new Detokenized(r.token, r.category);
    }
  });
}

export function document(d: DocumentMessage): Document {
  const r = d.retention;
  return {
    id: d.documentId,
    subject: d.subject,
    subjectDigest: d.subjectDigest,
    type: enumName(DocumentType, DOCUMENT_TYPE, d.documentType),
    mediaType: d.mediaType,
    createdAt: d.createdAt,
    uploadedBy: d.uploadedBy,
    scanState: enumName(ScanState, "SCAN_STATE_", d.scanState),
    scanEngine: d.scanEngine,
    variants: d.variants.map((v) => ({
      variant: enumName(DocumentVariant, VARIANT, v.variant),
      mediaType: v.mediaType,
      size: v.size,
    })),
    retention: {
      rule: r?.rule ?? "",
      trigger: r?.trigger ?? "",
      keep: r?.keep ?? "",
      then: r?.then ?? "",
      legal: r?.legal ?? false,
      dueAt: r?.dueAt,
      source: r?.source ?? "",
    },
    holds: d.holds.map(legalHold),
    verifiedAt: d.verifiedAt,
    retained: d.retained,
    pages: d.pages,
    insurerNumberMasked: d.insurerNumberMasked,
  };
}

export function legalHold(h: LegalHoldMessage): LegalHold {
  return { holdId: h.holdId, reason: h.reason, placedBy: h.placedBy, placedAt: h.placedAt };
}
