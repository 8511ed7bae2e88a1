// Colour a tile's values in the browser, exactly as the kernel's core/vis.py `VisStyle.colour`.
//
// The kernel sends each prediction tile as float32 values of the bands its vis params show (NaN
// where masked) and, once per style, the vis params compiled in Python (`VisStyle.browser_style`):
// min/max/gamma per band, the palette's 4097-entry RGBA lookup table, the class colours. The
// arithmetic below repeats Python's float32 steps one by one (Math.fround after every operation,
// numpy's round-half-even), so a tile is pixel-identical to `core.vis.render` of the same array
// (tests/e2e/test_tile_colouring.py compares the two in Chromium).

export interface IStyle {
  version: number;
  kind: 'palette' | 'grey' | 'rgb' | 'categorical';
  bands: number[];
  lo: number[];
  hi: number[];
  gamma: number[];
  alpha: number;
  table: Uint8Array | null; // palette: (4097, 4) RGBA; categorical: (classes, 4)
  class_min: number;
  class_values: number[] | null;
}

const LUT_STEPS = 4096; // core/vis.py LUT_STEPS
const f32 = Math.fround;

function bytesOf(buf: unknown): Uint8Array | null {
  if (buf instanceof DataView) {
    return new Uint8Array(buf.buffer, buf.byteOffset, buf.byteLength);
  }
  if (buf instanceof ArrayBuffer) {
    return new Uint8Array(buf);
  }
  if (ArrayBuffer.isView(buf)) {
    return new Uint8Array(buf.buffer, buf.byteOffset, buf.byteLength);
  }
  return null;
}

/** The `_style` trait as synced (its table a DataView in JupyterLab), or null if there is none. */
export function parseStyle(raw: any): IStyle | null {
  if (!raw || typeof raw !== 'object' || !raw.kind) {
    return null;
  }
  return { ...raw, table: raw.table ? bytesOf(raw.table) : null } as IStyle;
}

/** A tile's values as a Float32Array, copied out of the message buffer (which may be unaligned). */
export function valuesOf(buf: unknown, count: number): Float32Array | null {
  const bytes = bytesOf(buf);
  if (!bytes || bytes.byteLength !== count * 4) {
    return null;
  }
  const copy = new Uint8Array(count * 4);
  copy.set(bytes);
  return new Float32Array(copy.buffer); // little-endian, as the kernel sends it
}

function rint(x: number): number {
  // numpy's rint: halves to even
  const r = Math.round(x);
  return r - x === 0.5 && r % 2 !== 0 ? r - 1 : r;
}

/**
 * Colour `values` (bands x pixels, band-major) into `out` (RGBA, pixels x 4). Masked pixels (NaN,
 * +-Infinity in any band) are transparent.
 */
export function colour(values: Float32Array, pixels: number, style: IStyle, out: Uint8ClampedArray): void {
  const n = style.kind === 'rgb' ? 3 : 1;
  if (style.kind === 'categorical') {
    colourClasses(values, pixels, style, out);
    return;
  }
  if (style.kind === 'palette') {
    colourPalette(values, pixels, style, out);
    return;
  }
  const lo = style.lo.map(f32); // lo.astype(float32)
  const scale = style.lo.map((l, b) => f32(1 / (style.hi[b] - l))); // (1 / (hi - lo)).astype(float32)
  const inv = style.gamma.map(g => 1 / g);
  const v = [0, 0, 0];
  for (let i = 0; i < pixels; i++) {
    let masked = false;
    for (let b = 0; b < n; b++) {
      const x = values[b * pixels + i];
      if (!Number.isFinite(x)) {
        masked = true;
        break;
      }
      let s = f32(f32(x - lo[b]) * scale[b]);
      s = s < 0 ? 0 : s > 1 ? 1 : s;
      if (inv[b] !== 1) {
        s = f32(Math.pow(s, inv[b]));
      }
      v[b] = s;
    }
    const o = 4 * i;
    if (masked) {
      out[o] = out[o + 1] = out[o + 2] = out[o + 3] = 0;
    } else {
      for (let c = 0; c < 3; c++) {
        out[o + c] = rint(f32(v[n === 3 ? c : 0] * 255));
      }
      out[o + 3] = style.alpha;
    }
  }
}

/**
 * The palette case of `colour`, the one every restyle of a prediction layer runs: the same float32
 * steps, one band, and each pixel's four bytes copied from the table as one 32-bit word (half the
 * time of the general loop, measured in node on 256 x 256 tiles).
 */
function colourPalette(values: Float32Array, pixels: number, style: IStyle, out: Uint8ClampedArray): void {
  const lo = f32(style.lo[0]);
  const scale = f32(1 / (style.hi[0] - style.lo[0]));
  const inv = 1 / style.gamma[0];
  const bytes = style.table as Uint8Array;
  // A word view needs 4-byte alignment, and the table may sit anywhere in the message buffer.
  const aligned = bytes.byteOffset % 4 === 0 ? bytes : bytes.slice();
  const table = new Uint32Array(aligned.buffer, aligned.byteOffset, aligned.length / 4);
  const words = new Uint32Array(out.buffer, out.byteOffset, pixels);
  for (let i = 0; i < pixels; i++) {
    const x = values[i];
    if (!Number.isFinite(x)) {
      words[i] = 0;
      continue;
    }
    let s = f32(f32(x - lo) * scale);
    s = s < 0 ? 0 : s > 1 ? 1 : s;
    if (inv !== 1) {
      s = f32(Math.pow(s, inv));
    }
    words[i] = table[Math.trunc(f32(s * LUT_STEPS + 0.5))];
  }
}

function colourClasses(values: Float32Array, pixels: number, style: IStyle, out: Uint8ClampedArray): void {
  const table = style.table as Uint8Array;
  const rows = table.length / 4;
  const min = f32(style.class_min);
  const keys = style.class_values ? style.class_values.map(f32) : null;
  for (let i = 0; i < pixels; i++) {
    const x = values[i];
    const o = 4 * i;
    out[o] = out[o + 1] = out[o + 2] = out[o + 3] = 0;
    if (!Number.isFinite(x)) {
      continue;
    }
    const k = rint(x);
    let row = -1;
    if (keys) {
      row = keys.lastIndexOf(k);
    } else {
      const idx = f32(k - min);
      row = idx >= 0 && idx < rows ? Math.trunc(idx) : -1;
    }
    if (row >= 0) {
      out[o] = table[4 * row];
      out[o + 1] = table[4 * row + 1];
      out[o + 2] = table[4 * row + 2];
      out[o + 3] = table[4 * row + 3];
    }
  }
}
