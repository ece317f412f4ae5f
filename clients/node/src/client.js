// Client of a latentwire server (latentwire.v1.Codec over gRPC) with @grpc/grpc-js: the
// Python client SDK (runtime/client.py) in JavaScript.
//
// Every RPC gets a deadline (`timeout` seconds, per call or the client's default, spanning
// the retries) and is retried with exponential backoff and jitter when the server answers
// UNAVAILABLE: backoff, 2 x backoff, ... seconds (at most MAX_BACKOFF), each times a random
// factor in [0.5, 1.5), and never past the deadline. Decoding is a pure function, so a retry
// is always safe. A DecodeStream that breaks with UNAVAILABLE goes on over a new stream:
// every request the server has not answered yet is sent again, in order, before the next
// new one, so each message gives exactly one result; `retries` counts breaks in a row with
// no answer in between. Every gRPC error becomes the class of ./errors.js that the server
// named in the trailing metadata "latentwire-error" (or the status code's class).

import { createHash, randomBytes } from 'node:crypto';
import { mkdir, readdir, rename, rm, rmdir, stat, writeFile } from 'node:fs/promises';
import { basename, dirname, join, resolve } from 'node:path';

import grpc from '@grpc/grpc-js';

import { tensorToArray } from './arrays.js';
import {
  CodesError,
  ERROR_KEY,
  InputError,
  IntegrityError,
  LatentwireError,
  PackageError,
  ServerError,
  errorFromStatus,
} from './errors.js';
import { codecPackageDefinition, pruneDefaults } from './proto.js';

/** Longest pause between two attempts, in seconds (before jitter). */
export const MAX_BACKOFF = 10.0;
/** Reconstruction dtypes a client may ask for. */
export const OUTPUT_DTYPES = ['float32', 'float16'];
export const LB_POLICIES = ['pick_first', 'round_robin'];
const SERVICE = 'latentwire.v1.Codec';
const HEALTH_CHECK = '/grpc.health.v1.Health/Check';
const SERVING_STATUS = ['UNKNOWN', 'SERVING', 'NOT_SERVING', 'SERVICE_UNKNOWN'];

/** @typedef {import('./model.js').Codes} Codes */
/** @typedef {import('./arrays.js').NDArray} NDArray */

/**
 * @typedef {object} ClientOptions
 * @property {boolean} [tls] TLS (system roots unless rootCertificates)
 * @property {Buffer | null} [rootCertificates] PEM
 * @property {Buffer | null} [certificateChain] PEM, mutual TLS (with privateKey)
 * @property {Buffer | null} [privateKey] PEM
 * @property {string | null} [token] sent as "authorization: Bearer <token>"
 * @property {number | null} [timeout] default deadline of a call in seconds (null: none); 30
 * @property {number} [retries] how often a call answered UNAVAILABLE is tried again; 3
 * @property {number} [backoff] seconds before the first retry; 0.1
 * @property {number} [maxMessageBytes] send and receive limit; 256 MiB
 * @property {string | null} [serverNameOverride] TLS name to check instead of the target's
 * @property {string | null} [lbPolicy] "pick_first" | "round_robin"; null: auto (see lbPolicyFor)
 */

/**
 * @typedef {object} DecodeResult reconstructions of one or more Codes messages, in order
 * @property {NDArray} x float32 (or float16 bits) of shape (count, *input shape)
 * @property {string} modelName
 * @property {string} modelVersion the version directory that decoded the codes
 * @property {string} fingerprint
 */

/**
 * @typedef {object} ScoreReply anomaly scores of one or more Codes messages, in order
 * @property {string} score which score ran
 * @property {Float64Array} scores higher = more anomalous
 * @property {boolean[]} flags scores > threshold
 * @property {number} threshold the threshold the flags used (the first message's)
 * @property {Float64Array} pValues share of held-out normal scores >= each score
 * @property {string} modelName
 * @property {string} modelVersion
 * @property {string} fingerprint
 */

/** The server's answer to one request of a DecodeStream: reconstructions or an error. */
export class StreamResult {
  /**
   * @param {string} id @param {NDArray | null} x @param {LatentwireError | null} error
   * @param {{ modelName?: string, modelVersion?: string, fingerprint?: string }} [info]
   */
  constructor(id, x, error, info = {}) {
    /** The request's id: "0", "1", ... in the order the messages were given. */
    this.id = id;
    this.x = x;
    this.error = error;
    this.modelName = info.modelName ?? '';
    this.modelVersion = info.modelVersion ?? '';
    this.fingerprint = info.fingerprint ?? '';
  }

  get ok() {
    return this.error === null;
  }

  /** The reconstructions, or throw this request's error. */
  unwrap() {
    if (this.error !== null) throw this.error;
    return /** @type {NDArray} */ (this.x);
  }
}

/**
 * The load-balancing policy for `target`: `lbPolicy` when given, else round_robin for
 * targets that name several servers (`dns:` and multi-address `ipv4:`/`ipv6:` ones),
 * pick_first otherwise.
 * @param {string} target @param {string | null} [lbPolicy]
 */
export function lbPolicyFor(target, lbPolicy = null) {
  if (lbPolicy !== null && lbPolicy !== undefined) {
    if (!LB_POLICIES.includes(lbPolicy)) {
      throw new RangeError(`lbPolicy must be null (auto), 'pick_first' or 'round_robin', got '${lbPolicy}'`);
    }
    return lbPolicy;
  }
  return target.startsWith('dns:') || addresses(target).length ? 'round_robin' : 'pick_first';
}

/** @param {string} target */
function addresses(target) {
  const i = target.indexOf(':');
  const scheme = target.slice(0, i);
  const rest = target.slice(i + 1);
  if ((scheme !== 'ipv4' && scheme !== 'ipv6') || !rest.includes(',')) return [];
  return rest.split(',');
}

/** One call's retry budget: the deadline spans every attempt. */
export class Attempts {
  /**
   * @param {number} retries @param {number} backoff @param {number | null} timeout seconds
   * @param {() => number} [random] uniform in [0, 1)
   */
  constructor(retries, backoff, timeout, random = Math.random) {
    this.retries = retries;
    this.backoff = backoff;
    this.done = 0;
    this.random = random;
    this.deadline = timeout === null ? null : performance.now() / 1000 + timeout;
  }

  /** An attempt got somewhere (a stream answered): the retry count starts afresh. */
  progress() {
    this.done = 0;
  }

  /** Seconds left for the next attempt (null: no deadline). */
  remaining() {
    if (this.deadline === null) return null;
    return Math.max(this.deadline - performance.now() / 1000, 0);
  }

  /** The grpc-js deadline of the next attempt. */
  callOptions() {
    const left = this.remaining();
    return left === null ? {} : { deadline: new Date(Date.now() + left * 1000) };
  }

  /**
   * Seconds to wait before retrying after `err`, or null to give up.
   * @param {unknown} err a grpc-js ServiceError
   */
  nextDelay(err) {
    if (codeName(err) !== 'UNAVAILABLE' || this.done >= this.retries) return null;
    const delay = Math.min(this.backoff * 2 ** this.done, MAX_BACKOFF) * (0.5 + this.random());
    const left = this.remaining();
    if (left !== null && delay >= left) return null;
    this.done += 1;
    return delay;
  }
}

/** @param {unknown} err */
function codeName(err) {
  const code = /** @type {{ code?: unknown }} */ (err)?.code;
  if (typeof code !== 'number') return 'UNKNOWN';
  return /** @type {Record<number, string>} */ (/** @type {unknown} */ (grpc.status))[code] ?? 'UNKNOWN';
}

/**
 * The package's error for a grpc-js error: the class the server named in the trailer
 * "latentwire-error", else the status code's; errors the server did not name (transport
 * errors, another server) say where they came from.
 * @param {unknown} err @param {string} target
 * @returns {LatentwireError}
 */
export function errorFromGrpc(err, target) {
  if (err instanceof LatentwireError) return err;
  const e = /** @type {{ details?: string, message?: string, metadata?: grpc.Metadata }} */ (err);
  /** @type {string | null} */
  let kind = null;
  const values = e?.metadata instanceof grpc.Metadata ? e.metadata.get(ERROR_KEY) : [];
  for (const v of values) kind = typeof v === 'string' ? v : Buffer.from(v).toString();
  const details = e?.details || e?.message || String(err);
  return errorFromStatus(codeName(err), kind !== null ? details : `server ${target}: ${details}`, kind);
}

/** @param {string} dtype */
function checkOutputDtype(dtype) {
  if (!OUTPUT_DTYPES.includes(dtype)) {
    throw new InputError(`output_dtype must be one of ${OUTPUT_DTYPES.join(', ')}, got '${dtype}'`);
  }
  return dtype;
}

/**
 * @param {Codes | Iterable<Codes>} codes
 * @returns {Codes[]}
 */
function asMessages(codes) {
  const list = isCodes(codes) ? [/** @type {Codes} */ (codes)] : [.../** @type {Iterable<Codes>} */ (codes)];
  if (!list.length) throw new CodesError('no codes to decode');
  return list;
}

/** @param {unknown} v */
function isCodes(v) {
  return v !== null && typeof v === 'object' && !Array.isArray(v) && 'fingerprint' in v && 'tensor' in v;
}

/**
 * @param {any} resp @param {number | null} count
 * @returns {NDArray}
 */
function reconstruction(resp, count) {
  const x = tensorToArray(resp.reconstruction);
  if (count !== null && (x.shape.length === 0 || x.shape[0] !== count)) {
    throw new CodesError(`the server sent reconstructions of shape (${x.shape.join(', ')}) for ${count} samples`);
  }
  return x;
}

/**
 * Concatenate arrays along their first axis.
 * @param {NDArray[]} parts
 * @returns {NDArray}
 */
export function concat(parts) {
  if (parts.length === 1) return parts[0];
  const rest = parts[0].shape.slice(1).join();
  if (parts.some((p) => p.shape.slice(1).join() !== rest || p.dtype !== parts[0].dtype)) {
    throw new CodesError('the answers hold samples of different shapes or dtypes; decode them message by message');
  }
  const total = parts.reduce((a, p) => a + p.data.length, 0);
  const out = new (/** @type {any} */ (parts[0].data).constructor)(total);
  let off = 0;
  for (const p of parts) {
    out.set(p.data, off);
    off += p.data.length;
  }
  return { dtype: parts[0].dtype, shape: [parts.reduce((a, p) => a + p.shape[0], 0), ...parts[0].shape.slice(1)], data: out };
}

/** @param {any} resp */
function streamResult(resp) {
  /** @type {LatentwireError | null} */
  let err = null;
  /** @type {NDArray | null} */
  let x = null;
  if (resp.error) {
    // the server names the error class, as in a failed call's trailing metadata
    err = errorFromStatus(resp.error.code || 'UNKNOWN', resp.error.message, resp.error.kind || null);
  } else {
    try {
      x = reconstruction(resp, null);
    } catch (e) {
      if (!(e instanceof CodesError)) throw e;
      err = e; // a malformed answer spoils this item, not the stream
    }
  }
  if (err !== null) {
    return new StreamResult(resp.id, null, err, { modelName: resp.model_name, fingerprint: resp.fingerprint });
  }
  return new StreamResult(resp.id, x, null, {
    modelName: resp.model_name,
    modelVersion: resp.model_version,
    fingerprint: resp.fingerprint,
  });
}

/**
 * @param {number} i @param {Codes} msg @param {string} dtype
 */
function decodeRequest(i, msg, dtype) {
  return { id: String(i), codes: msg, output_dtype: dtype };
}

/**
 * DecodeStream requests with ids "0", "1", ... built from the caller's messages (Python's
 * _Requests): every request sent stays pending until the server answers its id, so that a
 * new stream can send the unanswered ones again, in id order, before pulling new messages.
 * An exception from the caller's iterable ends the requests and is kept in `failure`, to be
 * thrown once the server has answered what was sent.
 */
export class StreamRequests {
  /**
   * @param {Iterable<Codes> | AsyncIterable<Codes>} messages
   * @param {string} outputDtype
   */
  constructor(messages, outputDtype) {
    this.source = messages;
    /** @type {Iterator<Codes> | AsyncIterator<Codes> | null} */
    this.iter = null;
    this.dtype = checkOutputDtype(outputDtype);
    /** @type {Map<number, any>} id -> request sent (or about to be) and not answered */
    this.pending = new Map();
    /** @type {any[]} */
    this.replay = [];
    this.epoch = 0;
    this.nextId = 0;
    /** @type {unknown} */
    this.failure = null;
    this.failed = false;
    /** @type {Promise<void>} pulls from the source, one at a time */
    this.pulling = Promise.resolve();
  }

  /**
   * The server answered `id`; false when that id was answered before (a duplicate).
   * @param {string} id
   */
  answered(id) {
    if (!/^-?\d+$/.test(id)) return true; // not an id we give: nothing to check it against
    const i = Number(id);
    if (this.pending.delete(i)) return true;
    return !(i >= 0 && i < this.nextId);
  }

  get unanswered() {
    return this.pending.size;
  }

  /** Abandon the current attempt; true when a new one can go on. */
  restart() {
    this.epoch += 1;
    if (this.failed) return false;
    this.replay = [...this.pending.keys()].sort((a, b) => a - b).map((i) => this.pending.get(i));
    return true;
  }

  /**
   * The next request for attempt `epoch`, or null when it has no more.
   * @param {number} epoch
   * @returns {Promise<any | null>}
   */
  async next(epoch) {
    if (epoch !== this.epoch || this.failed) return null;
    if (this.replay.length) return this.replay.shift();
    // serialise pulls: an abandoned attempt's sender may still be waiting for the source
    let release = () => {};
    const previous = this.pulling;
    this.pulling = new Promise((r) => {
      release = r;
    });
    await previous;
    try {
      if (epoch !== this.epoch || this.failed) return null;
      if (this.replay.length) return this.replay.shift();
      /** @type {IteratorResult<Codes>} */
      let step;
      try {
        if (this.iter === null) {
          const src = /** @type {any} */ (this.source);
          this.iter = typeof src[Symbol.asyncIterator] === 'function' ? src[Symbol.asyncIterator]() : src[Symbol.iterator]();
        }
        step = await /** @type {any} */ (this.iter).next();
      } catch (err) {
        this.failure = err;
        this.failed = true;
        return null;
      }
      if (step.done) return null;
      const req = decodeRequest(this.nextId, step.value, this.dtype);
      this.pending.set(this.nextId, req);
      this.nextId += 1;
      if (epoch === this.epoch) return req;
      this.replay.push(req); // the attempt was abandoned meanwhile: the next one sends it
      return null;
    } finally {
      release();
    }
  }

  /** After the stream ended: throw the iterable's error, or say so when the server closed
   * the stream with requests unanswered. */
  checkComplete() {
    if (this.failed) throw this.failure;
    if (this.pending.size) {
      const ids = [...this.pending.keys()].sort((a, b) => a - b);
      throw new ServerError(
        `the server ended the DecodeStream without answering ${ids.length} request(s) ` +
          `(ids ${ids.slice(0, 5).join(', ')}${ids.length > 5 ? ', ...' : ''})`,
        'UNKNOWN',
      );
    }
  }
}

/** @param {number} seconds */
const sleep = (seconds) => new Promise((r) => setTimeout(r, seconds * 1000));

/** A client of a latentwire server. Call close() when done. */
export class Client {
  /**
   * Connect to `target` ("host:port", or any gRPC name: "dns:///host:port",
   * "ipv4:10.0.0.1:8001,10.0.0.2:8001"). TLS when `tls` or any certificate is given.
   * @param {string} target
   * @param {ClientOptions} [options]
   */
  constructor(target, options = {}) {
    const {
      tls = false,
      rootCertificates = null,
      certificateChain = null,
      privateKey = null,
      token = null,
      timeout = 30.0,
      retries = 3,
      backoff = 0.1,
      maxMessageBytes = 256 << 20,
      serverNameOverride = null,
      lbPolicy = null,
    } = options;
    if (!(retries >= 0)) throw new RangeError(`retries must be >= 0, got ${retries}`);
    if (!(backoff >= 0)) throw new RangeError(`backoff must be >= 0, got ${backoff}`);
    if (timeout !== null && !(timeout > 0)) throw new RangeError(`timeout must be > 0 or null, got ${timeout}`);
    if (!(maxMessageBytes >= 1)) throw new RangeError(`maxMessageBytes must be >= 1, got ${maxMessageBytes}`);
    if ((certificateChain === null) !== (privateKey === null)) {
      throw new RangeError('certificateChain and privateKey go together (mutual TLS)');
    }
    this.target = target;
    this.timeout = timeout;
    this.retries = retries;
    this.backoff = backoff;
    this.lbPolicy = lbPolicyFor(target, lbPolicy);
    /** Seconds -> a promise; replaceable (tests record the delays). */
    this.sleep = sleep;
    /** Uniform in [0, 1): the retry jitter. */
    this.random = Math.random;
    /** @type {Record<string, any>} */
    const channelOptions = {
      'grpc.service_config': JSON.stringify({ loadBalancingConfig: [{ [this.lbPolicy]: {} }] }),
      'grpc.max_send_message_length': maxMessageBytes,
      'grpc.max_receive_message_length': maxMessageBytes,
      // reconnect on our retry schedule: with gRPC's default (1 s, growing) a channel that
      // once failed to connect keeps failing fast, so early retries could never succeed
      'grpc.initial_reconnect_backoff_ms': Math.max(Math.floor(backoff * 1000), 10),
      'grpc.max_reconnect_backoff_ms': Math.floor(MAX_BACKOFF * 1000),
    };
    if (serverNameOverride) channelOptions['grpc.ssl_target_name_override'] = serverNameOverride;
    const many = addresses(target);
    if (many.length) channelOptions['grpc.default_authority'] = many[0].replace(/^\/+|\/+$/g, '');
    const secure = tls || rootCertificates !== null || certificateChain !== null;
    let credentials = grpc.credentials.createInsecure();
    /** @type {grpc.Metadata} */
    this.metadata = new grpc.Metadata();
    if (secure) {
      credentials = grpc.credentials.createSsl(rootCertificates, privateKey, certificateChain);
      if (token) {
        const call = grpc.credentials.createFromMetadataGenerator((_params, callback) => {
          const md = new grpc.Metadata();
          md.set('authorization', `Bearer ${token}`);
          callback(null, md);
        });
        credentials = grpc.credentials.combineChannelCredentials(credentials, call);
      }
    } else if (token) {
      // an insecure channel refuses call credentials: the token goes as plain metadata
      this.metadata.set('authorization', `Bearer ${token}`);
    }
    this.secure = secure;
    this.channel = new grpc.Client(target, credentials, channelOptions);
    this.methods = /** @type {Record<string, any>} */ (codecPackageDefinition()[SERVICE]);
  }

  toString() {
    return `Client('${this.target}', ${this.secure ? 'tls' : 'insecure'}, ${this.lbPolicy})`;
  }

  close() {
    this.channel.close();
  }

  /** @param {number | null | undefined} timeout */
  attempts(timeout) {
    return new Attempts(this.retries, this.backoff, timeout === undefined ? this.timeout : timeout, this.random);
  }

  /**
   * One unary call with retries; resolves to the response object.
   * @param {string} method e.g. "Decode"
   * @param {object} request
   * @param {number | null | undefined} timeout
   * @param {boolean} [prune] leave out default-valued fields first (as Python's protobuf
   *   does); false for a request that was pruned already
   * @returns {Promise<any>}
   */
  async call(method, request, timeout, prune = true) {
    const def = this.methods[method];
    const attempts = this.attempts(timeout);
    const body = prune ? pruneDefaults(request) : request;
    for (;;) {
      try {
        return await this.unary(def.path, def.requestSerialize, def.responseDeserialize, body, attempts);
      } catch (err) {
        const delay = attempts.nextDelay(err);
        if (delay === null) throw errorFromGrpc(err, this.target);
        await this.sleep(delay);
      }
    }
  }

  /**
   * @param {string} path @param {(v: any) => Buffer} ser @param {(b: Buffer) => any} de
   * @param {any} request @param {Attempts} attempts
   * @returns {Promise<any>}
   */
  unary(path, ser, de, request, attempts) {
    return new Promise((resolvePromise, reject) => {
      this.channel.makeUnaryRequest(path, ser, de, request, this.metadata.clone(), attempts.callOptions(), (err, value) => {
        if (err) reject(err);
        else resolvePromise(value);
      });
    });
  }

  /**
   * Decode Codes messages, one Decode RPC each; the reconstructions are concatenated.
   * @param {Codes | Iterable<Codes>} codes
   * @param {{ outputDtype?: string, timeout?: number | null }} [options]
   * @returns {Promise<DecodeResult>}
   */
  async decode(codes, options = {}) {
    const dtype = checkOutputDtype(options.outputDtype ?? 'float32');
    const messages = asMessages(codes);
    const responses = [];
    for (const [i, msg] of messages.entries()) {
      responses.push(await this.call('Decode', decodeRequest(i, msg, dtype), options.timeout));
    }
    const parts = responses.map((r, i) => reconstruction(r, Number(messages[i].count)));
    const first = responses[0];
    return { x: concat(parts), modelName: first.model_name, modelVersion: first.model_version, fingerprint: first.fingerprint };
  }

  /**
   * Decode messages over one DecodeStream, yielding each answer as it comes (ids "0", "1",
   * ... in the order given). A request the server refuses yields a result with `error` set
   * and the stream goes on; a stream that breaks with UNAVAILABLE goes on over a new one,
   * sending again what was not answered; any other failure of the whole stream throws, and
   * so does an error from `messages` (after the answers to what was sent). `timeout` is the
   * deadline of the whole stream.
   * @param {Iterable<Codes> | AsyncIterable<Codes>} messages
   * @param {{ outputDtype?: string, timeout?: number | null }} [options]
   * @returns {AsyncGenerator<StreamResult>}
   */
  async *decodeStream(messages, options = {}) {
    const requests = new StreamRequests(messages, options.outputDtype ?? 'float32');
    const attempts = this.attempts(options.timeout);
    const def = this.methods.DecodeStream;
    for (;;) {
      const epoch = requests.epoch;
      const call = this.channel.makeBidiStreamRequest(
        def.path,
        (/** @type {any} */ v) => def.requestSerialize(pruneDefaults(v)),
        def.responseDeserialize,
        this.metadata.clone(),
        attempts.callOptions(),
      );
      let closed = false;
      const ended = new Promise((r) => {
        call.once('close', r);
        call.once('error', r);
      }).then(() => {
        closed = true;
      });
      call.on('error', () => {}); // surfaced by the async iterator below
      const sender = (async () => {
        try {
          for (;;) {
            const req = await requests.next(epoch);
            if (req === null || closed) break;
            if (!call.write(req)) await Promise.race([new Promise((r) => call.once('drain', r)), ended]);
          }
          if (!closed) call.end();
        } catch {
          // the stream is gone (cancelled or failed): the reader below reports why
        }
      })();
      /** @type {number | null} */
      let delay = null;
      try {
        for await (const resp of call) {
          if (requests.answered(resp.id)) {
            attempts.progress();
            yield streamResult(resp);
          }
        }
        await sender;
        break;
      } catch (err) {
        delay = requests.restart() ? attempts.nextDelay(err) : null;
        if (delay === null) {
          if (requests.failed) throw requests.failure;
          throw errorFromGrpc(err, this.target);
        }
      } finally {
        closed = true;
        call.cancel(); // no-op when it finished; stops it when the caller stopped early
      }
      await this.sleep(delay);
    }
    requests.checkComplete();
  }

  /**
   * Anomaly scores of Codes messages, one Score RPC each, from a package trained with
   * `--task anomaly`. `score` picks one of the package's code scores ("" = its default);
   * `threshold` or `fpr` flag against another threshold than the calibrated one.
   * @param {Codes | Iterable<Codes>} codes
   * @param {{ score?: string, threshold?: number | null, fpr?: number | null, timeout?: number | null }} [options]
   * @returns {Promise<ScoreReply>}
   */
  async score(codes, options = {}) {
    const messages = asMessages(codes);
    const responses = [];
    for (const [i, msg] of messages.entries()) {
      /** @type {Record<string, any>} */
      const req = pruneDefaults({ id: String(i), codes: msg, score: options.score ?? '' });
      // proto3 `optional`: a threshold of 0 is sent (present), unlike the other zeros
      if (options.threshold !== undefined && options.threshold !== null) req.threshold = options.threshold;
      if (options.fpr !== undefined && options.fpr !== null) req.fpr = options.fpr;
      responses.push(await this.call('Score', req, options.timeout, false));
    }
    /** @type {number[]} */
    const scores = [];
    /** @type {boolean[]} */
    const flags = [];
    /** @type {number[]} */
    const pValues = [];
    responses.forEach((r, i) => {
      const n = Number(messages[i].count);
      for (const [key, tensor, sink] of /** @type {const} */ ([
        ['scores', r.scores, scores],
        ['flags', r.is_anomaly, flags],
        ['p_values', r.p_values, pValues],
      ])) {
        const arr = tensorToArray(tensor);
        if (arr.shape.length !== 1 || arr.shape[0] !== n) {
          throw new CodesError(`the server sent ${key} of shape (${arr.shape.join(', ')}) for ${n} samples`);
        }
        for (const v of arr.data) /** @type {any[]} */ (sink).push(key === 'flags' ? v !== 0 : Number(v));
      }
    });
    const first = responses[0];
    return {
      score: first.score,
      scores: Float64Array.from(scores),
      flags,
      threshold: first.threshold,
      pValues: Float64Array.from(pValues),
      modelName: first.model_name,
      modelVersion: first.model_version,
      fingerprint: first.fingerprint,
    };
  }

  /**
   * Encode samples (in the user's units) on the server with model `name`.
   * @param {string} name @param {NDArray} x
   * @param {{ version?: string, timeout?: number | null }} [options]
   * @returns {Promise<Codes>}
   */
  async encode(name, x, options = {}) {
    const inputs = { dtype: x.dtype, shape: x.shape, data: new Uint8Array(x.data.buffer, x.data.byteOffset, x.data.byteLength) };
    const resp = await this.call('Encode', { model_name: name, model_version: options.version ?? '', inputs }, options.timeout);
    return resp.codes;
  }

  /**
   * Every model version the server has loaded.
   * @param {{ timeout?: number | null }} [options]
   * @returns {Promise<any[]>} ModelInfo objects: name, version, fingerprint, manifest_json, latest
   */
  async listModels(options = {}) {
    const resp = await this.call('ListModels', {}, options.timeout);
    return resp.models;
  }

  /**
   * One model version's info and manifest (latest, or the one with `fingerprint`).
   * @param {string} name
   * @param {{ version?: string, fingerprint?: string, timeout?: number | null }} [options]
   * @returns {Promise<any>} ModelInfo
   */
  async getModel(name, options = {}) {
    const req = { name, version: options.version ?? '', fingerprint: options.fingerprint ?? '' };
    return this.call('GetModel', req, options.timeout);
  }

  /**
   * Fetch model `name`'s encoder and write an edge package (encoder.onnx + manifest.json)
   * to `outDir`, a new or empty folder, after checking its sha256s; returns the folder.
   * `includeScorer` also brings scorer.onnx and anomaly.npz of a package exported with
   * `--edge-score` (FetchEncoderRequest.include_scorer; INVALID_ARGUMENT for others).
   * @param {string} name @param {string} outDir
   * @param {{ version?: string, includeScorer?: boolean, timeout?: number | null }} [options]
   * @returns {Promise<string>}
   */
  async fetchEncoder(name, outDir, options = {}) {
    await checkOutDir(outDir); // before the transfer, not only after it
    /** @type {Record<string, any>} */
    const req = { name, version: options.version ?? '' };
    if (options.includeScorer) req.include_scorer = true;
    const resp = await this.call('FetchEncoder', req, options.timeout);
    return writeEncoderPackage(resp, outDir);
  }

  /**
   * Fetch model `name`'s encoder and load it straight into an EdgeModel (nothing written),
   * after the checks of `fetchEncoder` and of `EdgeModel.load`.
   * @param {string} name
   * @param {{ version?: string, timeout?: number | null, threads?: number }} [options]
   * @returns {Promise<import('./model.js').EdgeModel>}
   */
  async fetchModel(name, options = {}) {
    const resp = await this.call('FetchEncoder', { name, version: options.version ?? '' }, options.timeout);
    const { manifestJson, encoderOnnx } = checkFetched(resp);
    const { EdgeModel } = await import('./model.js');
    return EdgeModel.fromBytes(manifestJson, encoderOnnx, { threads: options.threads });
  }

  /**
   * grpc.health.v1 status: "SERVING", "NOT_SERVING", "SERVICE_UNKNOWN", ...
   * @param {string} [service]
   * @param {{ timeout?: number | null }} [options]
   */
  async health(service = '', options = {}) {
    const attempts = this.attempts(options.timeout);
    for (;;) {
      try {
        const data = await this.unary(HEALTH_CHECK, healthRequest, (b) => b, service, attempts);
        return healthStatus(data);
      } catch (err) {
        if (err instanceof LatentwireError) throw err;
        const delay = attempts.nextDelay(err);
        if (delay === null) {
          const e = errorFromGrpc(err, this.target);
          if (e.status === 'NOT_FOUND') return 'SERVICE_UNKNOWN';
          throw e;
        }
        await this.sleep(delay);
      }
    }
  }
}

/**
 * A grpc.health.v1.HealthCheckRequest (field 1: the service name) in protobuf's wire form.
 * @param {string} service
 */
function healthRequest(service) {
  const name = Buffer.from(service, 'utf8');
  if (!name.length) return Buffer.alloc(0);
  const size = [];
  let n = name.length;
  for (;;) {
    size.push((n & 0x7f) | (n > 0x7f ? 0x80 : 0));
    n >>>= 7;
    if (!n) break;
  }
  return Buffer.concat([Buffer.from([0x0a, ...size]), name]);
}

/**
 * The status of a HealthCheckResponse (field 1, a varint; absent means UNKNOWN).
 * @param {Buffer} data
 */
function healthStatus(data) {
  let status = 0;
  let pos = 0;
  const varint = () => {
    let v = 0;
    let mul = 1;
    for (;;) {
      if (pos >= data.length) throw new ServerError("the server's health answer is not a HealthCheckResponse");
      const b = data[pos++];
      v += (b & 0x7f) * mul;
      if (!(b & 0x80)) return v;
      mul *= 128;
    }
  };
  while (pos < data.length) {
    const key = varint();
    const field = Math.floor(key / 8);
    const wire = key % 8;
    if (wire === 0) {
      const v = varint();
      if (field === 1) status = v;
    } else if (wire === 2) pos += varint();
    else if (wire === 1 || wire === 5) pos += wire === 1 ? 8 : 4;
    else throw new ServerError("the server's health answer is not a HealthCheckResponse");
  }
  if (pos > data.length) throw new ServerError("the server's health answer is not a HealthCheckResponse");
  return status < SERVING_STATUS.length ? SERVING_STATUS[status] : String(status);
}

/** @param {string} outDir */
async function checkOutDir(outDir) {
  let info = null;
  try {
    info = await stat(outDir);
  } catch {
    return;
  }
  if (!info.isDirectory()) throw new PackageError(`${outDir} exists and is not a folder; give a new folder for the package`);
  if ((await readdir(outDir)).length) throw new PackageError(`${outDir} already exists and is not empty; give a new or empty folder`);
}

/**
 * A manifest's file name, refused when it would leave the package folder.
 * @param {unknown} name @param {string} fallback @param {string} [role]
 */
function safeFileName(name, fallback, role = 'encoder') {
  const text = name === null || name === undefined ? fallback : String(name);
  if (['', '.', '..', 'manifest.json'].includes(text) || /[/\\\0]/.test(text)) {
    throw new IntegrityError(`the manifest names the ${role} file '${text}'; expected a file name`);
  }
  return text;
}

/** @param {Uint8Array} b */
const hex = (b) => createHash('sha256').update(b).digest('hex');

/**
 * Check a FetchEncoder answer: encoder.onnx's sha256 against the server's word and the
 * manifest's, and each extra file's; returns what an edge package folder holds.
 * @param {any} resp FetchEncoderResponse
 * @returns {{ manifestJson: string, encoderOnnx: Uint8Array, encoderFile: string, files: [string, Uint8Array][] }}
 */
export function checkFetched(resp) {
  const blob = resp.encoder_onnx ?? Buffer.alloc(0);
  const digest = hex(blob);
  const said = String(resp.sha256 ?? '').toLowerCase();
  if (digest !== said) {
    throw new IntegrityError(
      `encoder.onnx from the server has sha256 ${digest.slice(0, 16)}..., the server says ` +
        `${said.slice(0, 16) || '(none)'}...: the transfer was damaged`,
    );
  }
  const text = resp.model?.manifest_json ?? '';
  let files;
  let entry;
  let expected;
  try {
    files = JSON.parse(text).files;
    entry = files.encoder;
    expected = String(entry.sha256).toLowerCase();
  } catch {
    throw new IntegrityError("the server's manifest is not valid JSON with files.encoder.sha256");
  }
  if (digest !== expected) {
    throw new IntegrityError(
      `encoder.onnx from the server has sha256 ${digest.slice(0, 16)}..., its manifest expects ` +
        `${expected.slice(0, 16)}...: the server's package is inconsistent`,
    );
  }
  const fileName = safeFileName(entry && typeof entry === 'object' ? entry.path : null, 'encoder.onnx');
  /** @type {[string, Uint8Array][]} */
  const extra = [];
  for (const f of resp.files ?? []) {
    const e = files && typeof files === 'object' && f.role !== 'encoder' ? files[f.role] : null;
    if (!e || typeof e !== 'object' || typeof e.sha256 !== 'string') {
      throw new IntegrityError(`the server sent a file '${String(f.role).slice(0, 40)}' its manifest does not name`);
    }
    const d = hex(f.data);
    for (const [want, whose] of [[String(f.sha256).toLowerCase(), 'the server says'], [e.sha256.toLowerCase(), 'its manifest expects']]) {
      if (d !== want) {
        throw new IntegrityError(
          `${f.role} from the server has sha256 ${d.slice(0, 16)}..., ${whose} ${want.slice(0, 16) || '(none)'}...: ` +
            'the transfer was damaged or the package is inconsistent',
        );
      }
    }
    extra.push([safeFileName(e.path, `${f.role}.bin`, f.role), f.data]);
  }
  if (new Set([fileName, ...extra.map(([n]) => n)]).size !== 1 + extra.length) {
    throw new IntegrityError("the server's manifest names one file for two roles");
  }
  return { manifestJson: text, encoderOnnx: blob, encoderFile: fileName, files: extra };
}

/**
 * Check a FetchEncoder answer's sha256s and write it as an edge package, atomically (a
 * fresh folder beside the target, renamed into place once complete).
 * @param {any} resp FetchEncoderResponse
 * @param {string} outDir
 */
export async function writeEncoderPackage(resp, outDir) {
  await checkOutDir(outDir);
  const { manifestJson: text, encoderOnnx: blob, encoderFile: fileName, files: extra } = checkFetched(resp);
  const out = resolve(outDir);
  await mkdir(dirname(out), { recursive: true });
  const tmp = join(dirname(out), `.${basename(out)}.${randomBytes(6).toString('hex')}.tmp`);
  await mkdir(tmp);
  try {
    await writeFile(join(tmp, fileName), blob);
    for (const [n, data] of extra) await writeFile(join(tmp, n), data);
    await writeFile(join(tmp, 'manifest.json'), text, 'utf8');
    try {
      await rename(tmp, out); // POSIX: also replaces an empty folder in one step
    } catch {
      await checkOutDir(out); // someone filled it meanwhile: refuse, clearly
      await rmdir(out);
      await rename(tmp, out);
    }
  } catch (err) {
    await rm(tmp, { recursive: true, force: true });
    throw err;
  }
  return outDir;
}
