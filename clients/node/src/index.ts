// @pdvault/client: pdvault's API for Node.js services.

export { DEFAULT_ADDR, checkAddress } from "./address";
export { DEFAULT_RETRY, RetryPolicy, retryPause } from "./call";
export { Client, ClientOptions, MAX_MESSAGE_BYTES, TlsOptions, VERSION } from "./client";
export { DOCUMENT_TYPES, LEGAL_BASES, VARIANTS } from "./convert";
export {
  DocumentClient,
  DownloadOptions,
  DownloadToOptions,
  MAX_BUFFERED_BYTES,
  MAX_CHUNK_BYTES,
  OpenedDocument,
  Progress,
  UPLOAD_CHUNK_BYTES,
  UploadAbortedError,
  UploadOptions,
  UploadSource,
  guessMediaType,
} from "./documents";
export {
  Code,
  DataLossError,
  DeadlineExceededError,
  FailedPreconditionError,
  FieldViolation,
  InvalidArgumentError,
  NotFoundError,
  PdvaultError,
  PermissionDeniedError,
  QuotaViolation,
  ResourceExhaustedError,
  UnauthenticatedError,
  UnavailableError,
  codeName,
  fromStatus,
} from "./errors";
export { ApprovalAdmin, CallerAdmin, KeyAdmin, SubjectAdmin, VAULT_TOKEN_METADATA } from "./subjects";
export {
  DeletedDocument,
  Detokenized,
  Document,
  Field,
  LegalBasisName,
  LegalHold,
  Retention,
  Sweep,
  Tokenized,
  VariantInfo,
} from "./types";

// The operator services answer with the API's messages: their types and enums.
export { Approval, ApprovalAction, ApprovalState } from "./gen/pdvault/v1/approval_service";
export {
  AddCallerKeyResponse,
  CallerKey,
  ListCallerKeysResponse,
} from "./gen/pdvault/v1/caller_service";
export {
  GetKeyStatusResponse,
  KeyStatus,
  KeyVersionState,
  RewrapDataKeysResponse,
  RotateKeyResponse,
  TrimKeyVersionsResponse,
} from "./gen/pdvault/v1/key_service";
export {
  AccessRecord,
  Consent,
  CorrectValueResponse,
  ErasureReceipt,
  ExportSubjectResponse,
  ExportedValue,
  GetSubjectResponse,
  ResumeSubjectResponse,
  RetainedDocument,
  SetConsentResponse,
  ShredRequester,
  ShredSubjectResponse,
  StopSubjectResponse,
  Subject,
  SubjectState,
} from "./gen/pdvault/v1/subject_service";
