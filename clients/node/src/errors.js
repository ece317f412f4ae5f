// Errors of latentwire-edge: the classes of the Python package's runtime/errors.py, with the
// same names and gRPC status codes, so that a failed call raises the class the server named:
//
//     LatentwireError                 INTERNAL
//     ├── InputError                  INVALID_ARGUMENT   arrays of the wrong shape/dtype, NaN/Inf
//     ├── CodesError                  INVALID_ARGUMENT   malformed codes or codes files
//     ├── FingerprintMismatch         FAILED_PRECONDITION codes made by another encoder
//     ├── PackageError                FAILED_PRECONDITION unreadable/incomplete model package
//     │   └── IntegrityError          FAILED_PRECONDITION sha256 or fingerprint does not match
//     ├── ProviderError               FAILED_PRECONDITION execution provider asked for is unusable
//     ├── DataError                   INVALID_ARGUMENT   training data that cannot be used
//     ├── ModelNotFound               NOT_FOUND          no loaded model of that name/version
//     ├── Overloaded                  RESOURCE_EXHAUSTED queue full, message over the size limit
//     ├── DeadlineExceeded            DEADLINE_EXCEEDED  the caller's deadline passed
//     ├── Unavailable                 UNAVAILABLE        server not ready, shutting down, unreachable
//     ├── Unauthenticated             UNAUTHENTICATED    missing or wrong bearer token
//     └── ServerError                 INTERNAL (or the status the server sent)
//
// The server names the class in the trailing metadata key "latentwire-error";
// `errorFromStatus` falls back to the status code when it is absent (another server, or a
// transport error), exactly as Python's error_from_status.

/** Trailing-metadata key in which the server names the error class of a failed call. */
export const ERROR_KEY = 'latentwire-error';

/** Base class; `status` is the gRPC status code name the error maps to. */
export class LatentwireError extends Error {
  /** @param {string} [message] */
  constructor(message) {
    super(message);
    this.name = new.target.name;
  }

  /** @returns {string} */
  get status() {
    return /** @type {typeof LatentwireError} */ (this.constructor).status;
  }

  /** gRPC status code name of the class. */
  static status = 'INTERNAL';
}

/** An input array does not match what the model expects. */
export class InputError extends LatentwireError {
  static status = 'INVALID_ARGUMENT';
}

/** Codes (a message or a codes file) are malformed. */
export class CodesError extends LatentwireError {
  static status = 'INVALID_ARGUMENT';
}

/** Codes were made by a different encoder than the one this decoder belongs to. */
export class FingerprintMismatch extends LatentwireError {
  static status = 'FAILED_PRECONDITION';
}

/** A model package is missing, incomplete or unreadable. */
export class PackageError extends LatentwireError {
  static status = 'FAILED_PRECONDITION';
}

/** A package file's sha256 or the fingerprint does not match the manifest. */
export class IntegrityError extends PackageError {}

/** The execution provider that was asked for cannot be used. */
export class ProviderError extends LatentwireError {
  static status = 'FAILED_PRECONDITION';
}

/** Training data cannot be loaded or used (a server-side class, kept for symmetry). */
export class DataError extends LatentwireError {
  static status = 'INVALID_ARGUMENT';
}

/** No loaded model (or version) has the name, version or fingerprint asked for. */
export class ModelNotFound extends LatentwireError {
  static status = 'NOT_FOUND';
}

/** The server's queue is full or a message is over the size limit; retry later/smaller. */
export class Overloaded extends LatentwireError {
  static status = 'RESOURCE_EXHAUSTED';
}

/** The caller's deadline passed before the work was done. */
export class DeadlineExceeded extends LatentwireError {
  static status = 'DEADLINE_EXCEEDED';
}

/** The server is not ready (loading, warming up, shutting down) or cannot be reached. */
export class Unavailable extends LatentwireError {
  static status = 'UNAVAILABLE';
}

/** The bearer token is missing or wrong. */
export class Unauthenticated extends LatentwireError {
  static status = 'UNAUTHENTICATED';
}

/** The server failed (INTERNAL) or answered with a status no other class covers. */
export class ServerError extends LatentwireError {
  /**
   * @param {string} message
   * @param {string} [status] the gRPC status code name
   */
  constructor(message, status = 'INTERNAL') {
    super(message);
    this._status = status;
  }

  get status() {
    return this._status;
  }
}

/** @type {Record<string, typeof LatentwireError>} */
const BY_NAME = Object.fromEntries(
  [
    CodesError,
    DataError,
    FingerprintMismatch,
    InputError,
    IntegrityError,
    PackageError,
    ProviderError,
    ModelNotFound,
    Overloaded,
    DeadlineExceeded,
    Unavailable,
    Unauthenticated,
  ].map((cls) => [cls.name, cls]),
);

/** @type {Record<string, typeof LatentwireError>} */
const BY_STATUS = {
  INVALID_ARGUMENT: InputError,
  NOT_FOUND: ModelNotFound,
  RESOURCE_EXHAUSTED: Overloaded,
  DEADLINE_EXCEEDED: DeadlineExceeded,
  UNAVAILABLE: Unavailable,
  UNAUTHENTICATED: Unauthenticated,
};

/**
 * The error for a gRPC status name, preferring the class the server named (`kind`, the
 * value of the "latentwire-error" trailer): that class when its status is `status`; with no
 * `kind`, the class of the status; a ServerError carrying `status` otherwise.
 * @param {string} status gRPC status code name, e.g. "NOT_FOUND"
 * @param {string} message
 * @param {string | null} [kind]
 * @returns {LatentwireError}
 */
export function errorFromStatus(status, message, kind = null) {
  const cls = Object.hasOwn(BY_NAME, kind || '') ? BY_NAME[/** @type {string} */ (kind)] : undefined;
  if (cls !== undefined && cls.status === status) return new cls(message);
  if ((kind === null || kind === undefined) && Object.hasOwn(BY_STATUS, status)) {
    return new BY_STATUS[status](message);
  }
  return new ServerError(message, status);
}
