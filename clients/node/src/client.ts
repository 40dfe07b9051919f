// pdvault's services for a Node.js service: deadlines, safe retries, errors as exceptions.

import { ChannelCredentials, ChannelOptions, credentials } from "@grpc/grpc-js";

import { checkAddress } from "./address";
import { Caller, DEFAULT_RETRY, RetryPolicy, Sleep, realSleep, unary } from "./call";
import { detokenizeRequest, detokenized, tokenizeRequest, tokenized } from "./convert";
import { DocumentClient } from "./documents";
import { ApprovalServiceClient } from "./gen/pdvault/v1/approval_service";
import { CallerServiceClient } from "./gen/pdvault/v1/caller_service";
import { DocumentServiceClient } from "./gen/pdvault/v1/document_service";
import { KeyServiceClient } from "./gen/pdvault/v1/key_service";
import { SubjectServiceClient } from "./gen/pdvault/v1/subject_service";
import { TokenServiceClient } from "./gen/pdvault/v1/token_service";
import { ApprovalAdmin, CallerAdmin, KeyAdmin, SubjectAdmin } from "./subjects";
import { Detokenized, Field, LegalBasisName, Tokenized } from "./types";

/** The package's version: the server's and the Python client's (one version for all). */
export const VERSION = "0.2.0";

/**
 * The largest message the client sends or accepts: the server's own limit (MAX_MESSAGE_BYTES in
 * vault/transport/server.py). gRPC's default receive limit, 4 MiB, would refuse a batch the
 * server is allowed to send.
 */
export const MAX_MESSAGE_BYTES = 8 * 1024 * 1024;

/** TLS to the server (PEM, as Buffers or strings). */
export interface TlsOptions {
  /** The CA bundle that signed the server's certificate; the system's CAs when left out. */
  ca?: Buffer | string;
  /** The name checked in the server's certificate, when it is not the address's host. */
  serverName?: string;
  /**
   * This client's certificate chain and private key, for a server that identifies callers by
   * client certificate (mTLS). The API key may then be left out: the certificate says who calls
   * (if both are given, the server requires them to name the same caller).
   */
  cert?: Buffer | string;
  key?: Buffer | string;
}

export interface ClientOptions {
  /** The caller's API key, sent as `authorization: Bearer <key>` on every call. */
  apiKey?: string;
  /** Each call's deadline in milliseconds, its retries included (5000). */
  timeoutMs?: number;
  /** Retries on UNAVAILABLE (attempts 4, backoff 100 ms doubling up to 2 s, full jitter). */
  retry?: Partial<RetryPolicy>;
  /**
   * TLS; without it the channel is plaintext, which pdvault serves on loopback only. `{}` is
   * TLS with the system's CAs.
   */
  tls?: TlsOptions;
  /** More grpc-js channel options (keepalive and the like). */
  channelOptions?: ChannelOptions;
  /** How the client waits between attempts (tests replace it). */
  sleep?: Sleep;
}

function pem(value: Buffer | string | undefined): Buffer | null {
  if (value === undefined) return null;
  return typeof value === "string" ? Buffer.from(value) : value;
}

function channelCredentials(tls: TlsOptions | undefined): ChannelCredentials {
  if (tls === undefined) return credentials.createInsecure();
  if ((tls.cert === undefined) !== (tls.key === undefined)) {
    throw new TypeError("tls.cert and tls.key go together");
  }
  return credentials.createSsl(pem(tls.ca), pem(tls.key), pem(tls.cert));
}

/**
 * pdvault's TokenService, and through it the other services for callers the policy lets use
 * them. One channel (one HTTP/2 connection) for all; `close()` releases it.
 *
 * ```ts
 * const vault = new Client("127.0.0.1:50051", { apiKey: process.env.PDV_API_KEY });
 * const [card] = await vault.tokenize("user-42", [{ category: "card_number", value: "4111111111111111" }]);
 * ```
 */
export class Client {
  /** @internal */ readonly caller: Caller;
  private readonly tokens: TokenServiceClient;
  /** @internal */ readonly documentStub: DocumentServiceClient;
  /** @internal */ readonly subjectStub: SubjectServiceClient;
  /** @internal */ readonly keyStub: KeyServiceClient;
  /** @internal */ readonly callerStub: CallerServiceClient;
  /** @internal */ readonly approvalStub: ApprovalServiceClient;

  constructor(addr: string, options: ClientOptions = {}) {
    checkAddress(addr);
    const timeoutMs = options.timeoutMs ?? 5000;
    if (!(timeoutMs > 0)) throw new RangeError("timeoutMs must be more than 0");
    const channelOptions: ChannelOptions = {
      "grpc.max_receive_message_length": MAX_MESSAGE_BYTES,
      "grpc.max_send_message_length": MAX_MESSAGE_BYTES,
      "grpc.primary_user_agent": `pdvault-node/${VERSION}`,
      ...options.channelOptions,
    };
    if (options.tls?.serverName) {
      channelOptions["grpc.ssl_target_name_override"] = options.tls.serverName;
      channelOptions["grpc.default_authority"] = options.tls.serverName;
    }
    this.tokens = new TokenServiceClient(addr, channelCredentials(options.tls), channelOptions);
    // The other services share the first one's channel.
    const shared = { channelOverride: this.tokens.getChannel() };
    const insecure = credentials.createInsecure(); // unused with channelOverride
    this.documentStub = new DocumentServiceClient(addr, insecure, shared);
    this.subjectStub = new SubjectServiceClient(addr, insecure, shared);
    this.keyStub = new KeyServiceClient(addr, insecure, shared);
    this.callerStub = new CallerServiceClient(addr, insecure, shared);
    this.approvalStub = new ApprovalServiceClient(addr, insecure, shared);
    this.caller = new Caller(
      options.apiKey,
      timeoutMs,
      { ...DEFAULT_RETRY, ...options.retry },
      options.sleep ?? realSleep,
    );
  }

  /** Close the channel; calls in flight fail with UNAVAILABLE or CANCELLED. */
  close(): void {
    this.tokens.close();
  }

  /**
   * Store the fields of one subject; one token per field, in order. All or nothing: a field
   * that breaks a rule fails the call (InvalidArgumentError, one violation per broken rule).
   * A request id is generated when none is given and reused on every retry, so a retry after a
   * timeout never creates a second set of tokens.
   */
  async tokenize(subject: string, fields: readonly Field[], options: { requestId?: string } = {}): Promise<Tokenized[]> {
    const request = tokenizeRequest(subject, fields, options.requestId);
    const answer = await this.caller.call(
      unary(this.tokens, this.tokens.tokenize),
      request,
    );
    return tokenized(answer);
  }

  /**
   * Resolve tokens for a purpose. A refused token comes back with `error` set, not thrown; the
   * call as a whole fails only for what concerns every token (authentication, a purpose this
   * caller may not claim, a batch too large). `legalBasis` states a legal exception; give it
   * only when it applies: it is audited, as `justification` (a ticket or order id) is.
   */
  async detokenize(
    tokens: readonly string[],
    purpose: string,
    options: { justification?: string; legalBasis?: LegalBasisName } = {},
  ): Promise<Detokenized[]> {
    const request = detokenizeRequest(tokens, purpose, options.justification ?? "", options.legalBasis);
    const answer = await this.caller.call(
      unary(this.tokens, this.tokens.detokenize),
      request,
    );
    return detokenized(answer);
  }

  /**
   * One token's value for a purpose, or its refusal thrown (PermissionDeniedError with the
   * reason TOKEN_REFUSED, SUBJECT_STOPPED, CONSENT_WITHDRAWN ...). The value is text, or a
   * Buffer for a binary category; a masked view gives the masked text.
   */
  async detokenizeOne(
    token: string,
    purpose: string,
    options: { justification?: string; legalBasis?: LegalBasisName } = {},
  ): Promise<string | Buffer> {
    const [result] = await this.detokenize([token], purpose, options);
    if (result === undefined) throw new Error("the server answered no result for the token");
    if (result.error !== undefined) throw result.error;
    return result.value ?? result.masked ?? "";
  }

  /** The data-subject lifecycle (the SubjectService), for an operator caller. */
  subjects(): SubjectAdmin {
    return new SubjectAdmin(this.caller, this.subjectStub);
  }

  /**
   * Key administration (the KeyService), for an operator caller. `vaultToken` is the operator's
   * own HashiCorp Vault token, which rotate and trim need when pdvault runs on Vault Transit;
   * it is sent with those calls only.
   */
  keys(options: { vaultToken?: string } = {}): KeyAdmin {
    return new KeyAdmin(this.caller, this.keyStub, options.vaultToken);
  }

  /** Callers' API keys (the CallerService), for an operator caller. */
  callers(): CallerAdmin {
    return new CallerAdmin(this.caller, this.callerStub);
  }

  /**
   * Dual control's requests (the ApprovalService), for an approving operator. `vaultToken`:
   * the approver's own HashiCorp Vault token, which approving a held `keys_trim` needs when
   * pdvault runs on Vault Transit (sent with approvals only).
   */
  approvals(options: { vaultToken?: string } = {}): ApprovalAdmin {
    return new ApprovalAdmin(this.caller, this.approvalStub, options.vaultToken);
  }

  /**
   * Identity documents (the DocumentService): upload and download as streams, metadata, holds,
   * verification and the retention sweep; who may call which is the policy's to say.
   */
  documents(): DocumentClient {
    return new DocumentClient(this.caller, this.documentStub);
  }
}
