// The one place calls go through: the caller's credentials as metadata, one deadline per call,
// and retries on UNAVAILABLE with exponential backoff and full jitter, at least the server's
// RetryInfo delay, within that deadline. The same rule as the Python client's (convert.py
// retry_pause, client.py _call).

import { CallOptions, Metadata, ServiceError } from "@grpc/grpc-js";

import { Code, PdvaultError, fromCallError } from "./errors";

/** Retries on UNAVAILABLE with exponential backoff and full jitter, within the deadline. */
export interface RetryPolicy {
  /** Attempts in all, the first included (4). 1: never retry. */
  attempts: number;
  /** The first backoff's upper bound in milliseconds (100). */
  initialBackoffMs: number;
  /** The largest backoff in milliseconds (2000). */
  maxBackoffMs: number;
  /** How much the bound grows after each attempt (2). */
  multiplier: number;
}

export const DEFAULT_RETRY: Readonly<RetryPolicy> = Object.freeze({
  attempts: 4,
  initialBackoffMs: 100,
  maxBackoffMs: 2000,
  multiplier: 2,
});

const RETRYABLE: ReadonlySet<number> = new Set([Code.UNAVAILABLE]);

/**
 * How long to wait (ms) before attempt `attempt + 1` of `attempts`, or undefined not to retry:
 * only UNAVAILABLE, within the attempts and the deadline (`leftMs`), with full jitter and at
 * least the server's RetryInfo delay (AIP-194).
 */
export function retryPause(
  error: PdvaultError,
  attempt: number,
  attempts: number,
  backoffMs: number,
  leftMs: number,
  random: () => number = Math.random,
): number | undefined {
  if (!RETRYABLE.has(error.code) || attempt >= attempts) return undefined;
  let pause = random() * backoffMs;
  if (error.retryDelayMs !== undefined) pause = Math.max(pause, error.retryDelayMs);
  return pause >= leftMs ? undefined : pause;
}

/** One attempt of a call: the request, the metadata to send and the call's options. */
export type Invoke<Req, Res> = (request: Req, metadata: Metadata, options: CallOptions) => Promise<Res>;

export interface CallSettings {
  /** false: one attempt only (a call that a retry could repeat: a hold, a rotation, an upload). */
  retry?: boolean;
  /** This call's deadline in milliseconds; the client's by default. */
  timeoutMs?: number;
  /** Metadata for this call only, beside the credentials. */
  extraMetadata?: Readonly<Record<string, string>>;
}

export type Sleep = (ms: number) => Promise<void>;

export const realSleep: Sleep = (ms) => new Promise((resolve) => setTimeout(resolve, ms));

/** The client's calling convention, shared by every service of the client. */
export class Caller {
  constructor(
    private readonly apiKey: string | undefined,
    readonly timeoutMs: number,
    private readonly retry: Readonly<RetryPolicy>,
    private readonly sleep: Sleep,
  ) {}

  /** A fresh Metadata for one attempt: the bearer key (when there is one) and `extra`. */
  metadata(extra: Readonly<Record<string, string>> = {}): Metadata {
    const md = new Metadata();
    if (this.apiKey) md.set("authorization", `Bearer ${this.apiKey}`);
    for (const [key, value] of Object.entries(extra)) md.set(key, value);
    return md;
  }

  /**
   * `invoke(request, ...)`, retried on UNAVAILABLE (unless `settings.retry` is false) within one
   * deadline. The same request object goes out on every attempt: a Tokenize's request id is
   * the first attempt's, so a retry after a lost answer never creates a second set of tokens.
   * Every failure of the call is raised as a PdvaultError; any other error `invoke` raises (a
   * PdvaultError of this library's own, a file's error) is raised as it is, never retried.
   */
  async call<Req, Res>(invoke: Invoke<Req, Res>, request: Req, settings: CallSettings = {}): Promise<Res> {
    const deadline = Date.now() + (settings.timeoutMs ?? this.timeoutMs);
    const attempts = settings.retry === false ? 1 : Math.max(1, this.retry.attempts);
    let backoff = this.retry.initialBackoffMs;
    for (let attempt = 1; ; attempt++) {
      try {
        // At least 1 ms: a deadline already past still makes one attempt, which fails at once.
        const options: CallOptions = { deadline: Math.max(deadline, Date.now() + 1) };
        return await invoke(request, this.metadata(settings.extraMetadata), options);
      } catch (err) {
        // This library's own errors, and any other error a method raises, are final.
        if (!isServiceError(err)) throw err;
        const error = fromCallError(err);
        const pause = retryPause(error, attempt, attempts, backoff, deadline - Date.now());
        if (pause === undefined) throw error;
        await this.sleep(pause);
        backoff = Math.min(backoff * this.retry.multiplier, this.retry.maxBackoffMs);
      }
    }
  }
}

/** A call's failure as grpc-js reports it: a status code and the trailing metadata. */
export function isServiceError(err: unknown): boolean {
  if (typeof err !== "object" || err === null || err instanceof PdvaultError) return false;
  const e = err as { code?: unknown; metadata?: unknown };
  return typeof e.code === "number" && e.metadata instanceof Metadata;
}

/**
 * A unary grpc-js method as a promise: `unary(stub, stub.tokenize)`. Its types come from the
 * method's last overload, (request, metadata, options, callback), the one called here.
 */
export function unary<S, Req, Res>(
  stub: S,
  method: (
    this: S,
    request: Req,
    metadata: Metadata,
    options: Partial<CallOptions>,
    callback: (error: ServiceError | null, response: Res) => void,
  ) => unknown,
): Invoke<Req, Res> {
  return (request, metadata, options) =>
    new Promise<Res>((resolve, reject) => {
      method.call(stub, request, metadata, options, (error, response) => {
        if (error) reject(error);
        else resolve(response);
      });
    });
}
