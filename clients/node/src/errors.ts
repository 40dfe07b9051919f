// Errors as exceptions: one root, one class per gRPC status a caller acts on, with the rich
// details (ErrorInfo reason, field violations, quota violations, retry delay) already decoded
// from the status's `grpc-status-details-bin` (a google.rpc.Status), as the Python client does.

import { Metadata, status as Code } from "@grpc/grpc-js";

import { BadRequest, ErrorInfo, QuotaFailure, RetryInfo } from "./gen/google/rpc/error_details";
import { Status } from "./gen/google/rpc/status";

export { Code };

/** The gRPC status codes by name: `codeName(7)` is `PERMISSION_DENIED`. */
export function codeName(code: number): string {
  return (Code as unknown as Record<number, string>)[code] ?? "UNKNOWN";
}

/** One broken rule of a request (`google.rpc.BadRequest`): `fields[0].value`, `card_number.luhn`. */
export interface FieldViolation {
  readonly field: string;
  readonly rule: string;
  readonly description: string;
}

/** One limit that was reached (`google.rpc.QuotaFailure`): what it applies to, and why. */
export interface QuotaViolation {
  readonly subject: string;
  readonly description: string;
}

export interface ErrorDetails {
  /** The ErrorInfo reason: TOKEN_REFUSED, PURPOSE_NOT_ALLOWED, SUBJECT_STOPPED ... */
  reason?: string;
  /** The ErrorInfo metadata: `rule`, the deciding rule of the policy, and the like. */
  metadata?: Readonly<Record<string, string>>;
  violations?: readonly FieldViolation[];
  /** `google.rpc.RetryInfo`: wait at least this many milliseconds before trying again. */
  retryDelayMs?: number;
  quotaViolations?: readonly QuotaViolation[];
}

/** Root of the client's errors. `code` is the gRPC status; `reason` the ErrorInfo reason. */
export class PdvaultError extends Error {
  readonly code: number;
  /** The server's message: never a value, never a credential. */
  readonly details: string;
  readonly reason: string;
  readonly metadata: Readonly<Record<string, string>>;
  readonly violations: readonly FieldViolation[];
  readonly retryDelayMs: number | undefined;
  readonly quotaViolations: readonly QuotaViolation[];

  constructor(code: number, message: string, details: ErrorDetails = {}) {
    super(`${codeName(code)}: ${message}`);
    this.name = new.target.name;
    this.code = code;
    this.details = message;
    this.reason = details.reason ?? "";
    this.metadata = details.metadata ?? {};
    this.violations = details.violations ?? [];
    this.retryDelayMs = details.retryDelayMs;
    this.quotaViolations = details.quotaViolations ?? [];
  }

  /** `UNAVAILABLE`, `PERMISSION_DENIED` ...: the status's name. */
  get codeName(): string {
    return codeName(this.code);
  }
}

export class InvalidArgumentError extends PdvaultError {}
export class UnauthenticatedError extends PdvaultError {}
export class PermissionDeniedError extends PdvaultError {}
export class UnavailableError extends PdvaultError {}
export class DeadlineExceededError extends PdvaultError {}
export class FailedPreconditionError extends PdvaultError {}
export class NotFoundError extends PdvaultError {}
export class DataLossError extends PdvaultError {}
/**
 * A limit was reached: a message larger than either side accepts, or a quota. Retrying the same
 * request does not help; send less, or wait `retryDelayMs` when the server gives one.
 */
export class ResourceExhaustedError extends PdvaultError {}

type ErrorClass = new (code: number, message: string, details?: ErrorDetails) => PdvaultError;

const CLASSES: ReadonlyMap<number, ErrorClass> = new Map<number, ErrorClass>([
  [Code.INVALID_ARGUMENT, InvalidArgumentError],
  [Code.UNAUTHENTICATED, UnauthenticatedError],
  [Code.PERMISSION_DENIED, PermissionDeniedError],
  [Code.UNAVAILABLE, UnavailableError],
  [Code.DEADLINE_EXCEEDED, DeadlineExceededError],
  [Code.FAILED_PRECONDITION, FailedPreconditionError],
  [Code.NOT_FOUND, NotFoundError],
  [Code.DATA_LOSS, DataLossError],
  [Code.RESOURCE_EXHAUSTED, ResourceExhaustedError],
]);

/** The exception of the class that `code` calls for. */
export function makeError(code: number, message: string, details: ErrorDetails = {}): PdvaultError {
  const cls = CLASSES.get(code) ?? PdvaultError;
  return new cls(code, message, details);
}

const TYPE_PREFIX = "type.googleapis.com/";

/** Decode a `google.rpc.Status` (a whole call's, or one batch item's) into an exception. */
export function fromStatus(status: Status): PdvaultError {
  const details: ErrorDetails = {};
  for (const any of status.details) {
    const type = any.typeUrl.startsWith(TYPE_PREFIX)
      ? any.typeUrl.slice(TYPE_PREFIX.length)
      : any.typeUrl;
    try {
      switch (type) {
        case "google.rpc.ErrorInfo": {
          const info = ErrorInfo.decode(any.value);
          details.reason = info.reason;
          details.metadata = { ...info.metadata };
          break;
        }
        case "google.rpc.BadRequest":
          details.violations = BadRequest.decode(any.value).fieldViolations.map((v) => ({
            field: v.field,
            rule: v.reason,
            description: v.description,
          }));
          break;
        case "google.rpc.RetryInfo": {
          const delay = RetryInfo.decode(any.value).retryDelay;
          if (delay !== undefined) {
            details.retryDelayMs = delay.seconds * 1000 + Math.floor(delay.nanos / 1e6);
          }
          break;
        }
        case "google.rpc.QuotaFailure":
          details.quotaViolations = QuotaFailure.decode(any.value).violations.map((v) => ({
            subject: v.subject,
            description: v.description,
          }));
          break;
        default: // a detail this client does not know (a newer server): ignored
      }
    } catch {
      // An undecodable detail says nothing we could act on; the status itself still stands.
    }
  }
  return makeError(status.code, status.message, details);
}

const STATUS_DETAILS = "grpc-status-details-bin";

/** What grpc-js hands a failed call: a status code, its message and the trailing metadata. */
export interface CallError {
  code?: number;
  details?: string;
  message?: string;
  metadata?: Metadata;
}

/** The exception for a failed call: its rich status when the server sent one. */
export function fromCallError(err: unknown): PdvaultError {
  if (err instanceof PdvaultError) return err;
  const e = (typeof err === "object" && err !== null ? err : {}) as CallError;
  const [raw] = e.metadata instanceof Metadata ? e.metadata.get(STATUS_DETAILS) : [];
  if (raw instanceof Buffer) {
    try {
      return fromStatus(Status.decode(raw));
    } catch {
      // fall through to the plain status
    }
  }
  const code = typeof e.code === "number" ? e.code : Code.UNKNOWN;
  const message = e.details || (e.message ?? "") || codeName(code);
  return makeError(code, message);
}
