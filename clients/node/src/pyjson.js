// JSON as Python's json module reads and writes it, for the manifest fingerprint.
//
// The fingerprint is sha256 of json.dumps(contract, sort_keys=True, separators=(",", ":"))
// (runtime/manifest.py canonical_json). Reproducing those bytes needs what JSON.parse loses:
// whether a number was written as an integer (Python int, printed as is) or with a fraction
// or exponent (Python float, printed by float.__repr__: 1.0, 1e-05, 1.5e+16). So manifests
// are parsed here into a tree that keeps each number's text, and turned into plain values
// and into Python's canonical bytes from it. Like Python's json.loads, the parser also takes
// NaN, Infinity and -Infinity, and a repeated key keeps its last value.

/**
 * @typedef {{ t: 'num', text: string, float: boolean }} NumNode
 * @typedef {{ t: 'obj', entries: Map<string, Node> }} ObjNode
 * @typedef {{ t: 'arr', items: Node[] }} ArrNode
 * @typedef {string | boolean | null | NumNode | ObjNode | ArrNode} Node
 */

const NUMBER = /-?(?:0|[1-9]\d*)(\.\d+)?([eE][-+]?\d+)?/y;
const WS = /[ \t\n\r]*/y;

/**
 * Parse JSON text into a tree that keeps each number's literal.
 * @param {string} text
 * @returns {Node}
 */
export function parseTree(text) {
  let pos = 0;
  const fail = (/** @type {string} */ what) => {
    throw new SyntaxError(`${what} at position ${pos} of the JSON text`);
  };
  const ws = () => {
    WS.lastIndex = pos;
    WS.exec(text);
    pos = WS.lastIndex;
  };
  /** @returns {string} */
  const string = () => {
    pos++; // the opening quote
    let out = '';
    for (;;) {
      const start = pos;
      while (pos < text.length) {
        const c = text.charCodeAt(pos);
        if (c === 0x22 || c === 0x5c || c < 0x20) break;
        pos++;
      }
      out += text.slice(start, pos);
      if (pos >= text.length) fail('an unterminated string');
      const c = text[pos];
      if (c === '"') {
        pos++;
        return out;
      }
      if (c !== '\\') fail('a control character in a string');
      const e = text[pos + 1];
      pos += 2;
      const simple = { '"': '"', '\\': '\\', '/': '/', b: '\b', f: '\f', n: '\n', r: '\r', t: '\t' };
      if (e in simple) out += simple[/** @type {keyof typeof simple} */ (e)];
      else if (e === 'u') {
        const hex = text.slice(pos, pos + 4);
        if (!/^[0-9a-fA-F]{4}$/.test(hex)) fail('a bad \\u escape');
        out += String.fromCharCode(parseInt(hex, 16));
        pos += 4;
      } else fail('a bad escape');
    }
  };
  /** @returns {Node} */
  const value = () => {
    ws();
    const c = text[pos];
    if (c === '{') {
      pos++;
      /** @type {Map<string, Node>} */
      const entries = new Map();
      ws();
      if (text[pos] === '}') {
        pos++;
        return { t: 'obj', entries };
      }
      for (;;) {
        ws();
        if (text[pos] !== '"') fail('expected a key');
        const key = string();
        ws();
        if (text[pos] !== ':') fail("expected ':'");
        pos++;
        entries.delete(key); // Python keeps the last value (the order is sorted anyway)
        entries.set(key, value());
        ws();
        if (text[pos] === ',') {
          pos++;
          continue;
        }
        if (text[pos] === '}') {
          pos++;
          return { t: 'obj', entries };
        }
        fail("expected ',' or '}'");
      }
    }
    if (c === '[') {
      pos++;
      /** @type {Node[]} */
      const items = [];
      ws();
      if (text[pos] === ']') {
        pos++;
        return { t: 'arr', items };
      }
      for (;;) {
        items.push(value());
        ws();
        if (text[pos] === ',') {
          pos++;
          continue;
        }
        if (text[pos] === ']') {
          pos++;
          return { t: 'arr', items };
        }
        fail("expected ',' or ']'");
      }
    }
    if (c === '"') return string();
    for (const [word, v] of /** @type {[string, Node][]} */ ([
      ['true', true],
      ['false', false],
      ['null', null],
      ['NaN', { t: 'num', text: 'NaN', float: true }],
      ['Infinity', { t: 'num', text: 'Infinity', float: true }],
      ['-Infinity', { t: 'num', text: '-Infinity', float: true }],
    ])) {
      if (text.startsWith(word, pos)) {
        pos += word.length;
        return v;
      }
    }
    NUMBER.lastIndex = pos;
    const m = NUMBER.exec(text);
    if (!m) fail('expected a value');
    pos = NUMBER.lastIndex;
    return { t: 'num', text: /** @type {RegExpExecArray} */ (m)[0], float: !!(m?.[1] || m?.[2]) };
  };
  const root = value();
  ws();
  if (pos !== text.length) fail('extra data');
  return root;
}

/**
 * The plain JavaScript value of a tree (numbers become doubles, as JSON.parse makes them).
 * @param {Node} node
 * @returns {any}
 */
export function toValue(node) {
  if (node === null || typeof node !== 'object') return node;
  if (node.t === 'num') return Number(node.text);
  if (node.t === 'arr') return node.items.map(toValue);
  /** @type {Record<string, any>} */
  const out = {};
  for (const [k, v] of node.entries) {
    Object.defineProperty(out, k, { value: toValue(v), enumerable: true, writable: true, configurable: true });
  }
  return out;
}

/**
 * Python's repr() of a float (float_repr_style "short"), as json.dumps writes it.
 * @param {number} x
 */
export function pyFloatRepr(x) {
  if (Number.isNaN(x)) return 'NaN';
  if (x === Infinity) return 'Infinity';
  if (x === -Infinity) return '-Infinity';
  if (x === 0) return Object.is(x, -0) ? '-0.0' : '0.0';
  const sign = x < 0 ? '-' : '';
  // the shortest digits that round-trip, as Python's repr picks them
  const [mant, exp] = Math.abs(x).toExponential().split('e');
  const digits = mant.replace('.', '');
  const e = Number(exp);
  if (e < -4 || e >= 16) {
    const m = digits.length > 1 ? `${digits[0]}.${digits.slice(1)}` : digits;
    const ee = Math.abs(e) < 10 ? `0${Math.abs(e)}` : String(Math.abs(e));
    return `${sign}${m}e${e < 0 ? '-' : '+'}${ee}`;
  }
  if (e < 0) return `${sign}0.${'0'.repeat(-e - 1)}${digits}`;
  const int = digits.slice(0, e + 1).padEnd(e + 1, '0');
  const frac = digits.slice(e + 1) || '0';
  return `${sign}${int}.${frac}`;
}

/**
 * A string as json.dumps(ensure_ascii=True) writes it.
 * @param {string} s
 */
export function pyString(s) {
  let out = '"';
  for (let i = 0; i < s.length; i++) {
    const c = s.charCodeAt(i);
    if (c === 0x22) out += '\\"';
    else if (c === 0x5c) out += '\\\\';
    else if (c >= 0x20 && c <= 0x7e) out += s[i];
    else if (c === 0x0a) out += '\\n';
    else if (c === 0x0d) out += '\\r';
    else if (c === 0x09) out += '\\t';
    else if (c === 0x08) out += '\\b';
    else if (c === 0x0c) out += '\\f';
    else out += `\\u${c.toString(16).padStart(4, '0')}`;
  }
  return `${out}"`;
}

/** @param {string} a @param {string} b */
function byCodePoint(a, b) {
  const A = Array.from(a, (c) => /** @type {number} */ (c.codePointAt(0)));
  const B = Array.from(b, (c) => /** @type {number} */ (c.codePointAt(0)));
  for (let i = 0; i < Math.min(A.length, B.length); i++) {
    if (A[i] !== B[i]) return A[i] - B[i];
  }
  return A.length - B.length;
}

/**
 * json.dumps(value, sort_keys=True, separators=(",", ":")) of a tree, as Python writes it
 * for the value json.loads made of the same text.
 * @param {Node} node
 * @returns {string}
 */
export function canonical(node) {
  if (node === null) return 'null';
  if (node === true) return 'true';
  if (node === false) return 'false';
  if (typeof node === 'string') return pyString(node);
  if (node.t === 'num') {
    return node.float ? pyFloatRepr(Number(node.text)) : BigInt(node.text).toString();
  }
  if (node.t === 'arr') return `[${node.items.map(canonical).join(',')}]`;
  const keys = [...node.entries.keys()].sort(byCodePoint);
  return `{${keys.map((k) => `${pyString(k)}:${canonical(/** @type {Node} */ (node.entries.get(k)))}`).join(',')}}`;
}

/**
 * An object tree from plain keys and trees (to assemble a value to canonicalise).
 * @param {Record<string, Node>} entries
 * @returns {ObjNode}
 */
export function objectNode(entries) {
  return { t: 'obj', entries: new Map(Object.entries(entries)) };
}
