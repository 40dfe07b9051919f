// The operator services through a Client: SubjectService, KeyService, CallerService and
// ApprovalService (the Python client's admin.py). Answers are the API's messages as plain objects (generated types:
// timestamps as Date, 64-bit integers as numbers); the export contains values: handle it as the
// data it is.

import { Caller, unary } from "./call";
import {
  Approval,
  ApprovalServiceClient,
  ListApprovalsResponse,
} from "./gen/pdvault/v1/approval_service";
import { valueMessage } from "./convert";
import {
  AddCallerKeyResponse,
  CallerServiceClient,
  ListCallerKeysResponse,
} from "./gen/pdvault/v1/caller_service";
import {
  GetKeyStatusResponse,
  KeyServiceClient,
  RewrapDataKeysResponse,
  RotateKeyResponse,
  TrimKeyVersionsResponse,
} from "./gen/pdvault/v1/key_service";
import {
  CorrectValueResponse,
  ExportSubjectResponse,
  GetSubjectResponse,
  ResumeSubjectResponse,
  SetConsentResponse,
  ShredRequester,
  ShredSubjectResponse,
  StopSubjectResponse,
  SubjectServiceClient,
} from "./gen/pdvault/v1/subject_service";

/** The SubjectService (operators with the `subjects` operation). */
export class SubjectAdmin {
  constructor(
    private readonly caller: Caller,
    private readonly stub: SubjectServiceClient,
  ) {}

  get(subject: string): Promise<GetSubjectResponse> {
    return this.caller.call(unary(this.stub, this.stub.getSubject), { subject });
  }

  /** Stop processing the subject's data (reads refused with SUBJECT_STOPPED until resumed). */
  stop(subject: string): Promise<StopSubjectResponse> {
    return this.caller.call(unary(this.stub, this.stub.stopSubject), { subject });
  }

  resume(subject: string): Promise<ResumeSubjectResponse> {
    return this.caller.call(unary(this.stub, this.stub.resumeSubject), { subject });
  }

  /**
   * Crypto-shred; idempotent, so a retry returns the same receipt. `bySubject`: the data
   * subject asked for it through its own flow (audited); otherwise an operator did, and dual
   * control may hold it for a second operator (FailedPreconditionError, reason
   * APPROVAL_REQUIRED).
   */
  shred(subject: string, options: { bySubject?: boolean } = {}): Promise<ShredSubjectResponse> {
    const requestedBy = options.bySubject
      ? ShredRequester.SHRED_REQUESTER_SUBJECT
      : ShredRequester.SHRED_REQUESTER_OPERATOR;
    return this.caller.call(unary(this.stub, this.stub.shredSubject), { subject, requestedBy });
  }

  /** Everything held about the subject, values included, and who read it. */
  export(subject: string): Promise<ExportSubjectResponse> {
    return this.caller.call(unary(this.stub, this.stub.exportSubject), { subject });
  }

  consent(subject: string, purpose: string, granted: boolean): Promise<SetConsentResponse> {
    return this.caller.call(unary(this.stub, this.stub.setConsent), {
      subject,
      purpose,
      granted,
    });
  }

  /** Replace the value behind a token (the token stays the same). */
  correct(token: string, value: string | Uint8Array): Promise<CorrectValueResponse> {
    return this.caller.call(unary(this.stub, this.stub.correctValue), {
      token,
      value: valueMessage(value),
    });
  }
}

/** The metadata key of an operator's own HashiCorp Vault token (rotate and trim on Transit). */
export const VAULT_TOKEN_METADATA = "x-vault-token";

/** The KeyService (operators with the `keys` operation). Rotate is never retried. */
export class KeyAdmin {
  private readonly admin: Readonly<Record<string, string>>;

  constructor(
    private readonly caller: Caller,
    private readonly stub: KeyServiceClient,
    vaultToken: string | undefined,
  ) {
    this.admin = vaultToken ? { [VAULT_TOKEN_METADATA]: vaultToken } : {};
  }

  status(): Promise<GetKeyStatusResponse> {
    return this.caller.call(unary(this.stub, this.stub.getKeyStatus), {});
  }

  /** Never retried: a retry after a lost answer could rotate twice. */
  rotate(): Promise<RotateKeyResponse> {
    return this.caller.call(unary(this.stub, this.stub.rotateKey), {}, {
      retry: false,
      extraMetadata: this.admin,
    });
  }

  /** One batch; pass the returned `nextPageToken` to the next call until it is empty. */
  rewrapBatch(batchSize = 100, pageToken = ""): Promise<RewrapDataKeysResponse> {
    return this.caller.call(unary(this.stub, this.stub.rewrapDataKeys), {
      batchSize,
      pageToken,
    });
  }

  trim(minVersion = 0): Promise<TrimKeyVersionsResponse> {
    return this.caller.call(
      unary(this.stub, this.stub.trimKeyVersions),
      { minVersion },
      { extraMetadata: this.admin },
    );
  }
}

/** The CallerService (operators with the `callers` operation): callers' API keys. */
export class CallerAdmin {
  constructor(
    private readonly caller: Caller,
    private readonly stub: CallerServiceClient,
  ) {}

  /** A new key for `caller`, in the answer only. Never retried: a retry would issue another. */
  add(caller: string, rotation = false): Promise<AddCallerKeyResponse> {
    return this.caller.call(
      unary(this.stub, this.stub.addCallerKey),
      { caller, rotation },
      { retry: false },
    );
  }

  list(): Promise<ListCallerKeysResponse> {
    return this.caller.call(unary(this.stub, this.stub.listCallerKeys), {});
  }

  async revoke(caller: string, keyId: string): Promise<void> {
    await this.caller.call(unary(this.stub, this.stub.revokeCallerKey), {
      caller,
      keyId,
    });
  }
}

/**
 * The ApprovalService: dual control's second operator (callers with the `approvals`
 * operation). Approve and reject are not retried: a retry after the first took effect would be
 * refused anyway.
 */
export class ApprovalAdmin {
  private readonly admin: Readonly<Record<string, string>>;

  constructor(
    private readonly caller: Caller,
    private readonly stub: ApprovalServiceClient,
    vaultToken: string | undefined,
  ) {
    this.admin = vaultToken ? { [VAULT_TOKEN_METADATA]: vaultToken } : {};
  }

  async list(): Promise<Approval[]> {
    const answer: ListApprovalsResponse = await this.caller.call(unary(this.stub, this.stub.listApprovals), {});
    return answer.approvals;
  }

  /** Approve another operator's request: its step is carried out now, once. */
  async approve(requestId: string): Promise<Approval | undefined> {
    const answer = await this.caller.call(
      unary(this.stub, this.stub.approveRequest),
      { requestId },
      { retry: false, extraMetadata: this.admin },
    );
    return answer.approval;
  }

  async reject(requestId: string): Promise<Approval | undefined> {
    const answer = await this.caller.call(unary(this.stub, this.stub.rejectRequest), { requestId }, { retry: false });
    return answer.approval;
  }
}
