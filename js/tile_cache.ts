// The values of prediction tiles this page has received, kept so that a tile shown again (a
// zoom back out, a pan back) is coloured here with the current style, without a round trip to
// the kernel.
//
// What a tile holds is named by its layer (the widget model's id), the layer's data generation,
// the bands and z/x/y. The generation is the kernel's: PredictionLayer bumps it whenever it
// forgets its own tile arrays (`refresh()`, which a new `image` — a new model, new parameters, a
// new input — also calls) and stamps every data tile with the generation it was read under; the
// view looks tiles up under the newest generation it knows (the `_generation` trait, the
// `redraw` message that follows a bump, or a newer stamp), so values of an earlier image, model
// or cache are never shown again. Other bands (a `redraw` without a bump) are other keys, as in
// the kernel's tile cache. Only tiles answered "ok" with data are kept: error, notice and
// "zoom in" tiles are PNGs the kernel makes again each time (it caches none of them either).
//
// One cache for the page, shared by every layer and every view of a layer (a map displayed
// twice), bounded by bytes, least recently used first out.

export interface ITileValues {
  values: Float32Array; // bands x rows x cols, band-major, NaN where masked
  bands: number[]; // which of the image's bands (the style's `bands` they were sent for)
  rows: number;
  cols: number;
  style: number; // the style version they were sent with
}

// 128 MiB: half of what the kernel keeps per layer (TILE_CACHE_BYTES), because the browser
// tab also holds JupyterLab and every notebook's outputs. That is 512 single-band 256x256 tiles,
// about twenty 24-tile viewports: more than a session of zooming back and forth revisits,
// and a small share of what Chromium lets one tab use.
export const TILE_CACHE_BYTES = 128 * 1024 * 1024;

interface IEntry {
  tile: ITileValues;
  layer: string;
  generation: number;
}

export class TileValuesCache {
  private entries = new Map<string, IEntry>(); // in use order: the first is the least recent
  private used = 0;

  constructor(readonly maxBytes: number) {}

  get bytes(): number {
    return this.used;
  }

  get size(): number {
    return this.entries.size;
  }

  static key(layer: string, generation: number, bands: number[], z: number, x: number, y: number): string {
    return `${layer}|${generation}|${bands.join(',')}|${z}/${x}/${y}`;
  }

  get(layer: string, generation: number, bands: number[], z: number, x: number, y: number): ITileValues | null {
    const key = TileValuesCache.key(layer, generation, bands, z, x, y);
    const entry = this.entries.get(key);
    if (!entry) {
      return null;
    }
    this.entries.delete(key); // now the most recently used
    this.entries.set(key, entry);
    return entry.tile;
  }

  put(layer: string, generation: number, z: number, x: number, y: number, tile: ITileValues): void {
    const size = tile.values.byteLength;
    if (size > this.maxBytes) {
      return;
    }
    const key = TileValuesCache.key(layer, generation, tile.bands, z, x, y);
    this.drop(key);
    this.entries.set(key, { tile, layer, generation });
    this.used += size;
    for (const [old] of this.entries) {
      if (this.used <= this.maxBytes) {
        break;
      }
      this.drop(old);
    }
  }

  /** Forget a layer's tiles older than `generation` (all of them without it). */
  forget(layer: string, generation = Infinity): void {
    for (const [key, entry] of [...this.entries]) {
      if (entry.layer === layer && entry.generation < generation) {
        this.drop(key);
      }
    }
  }

  private drop(key: string): void {
    const entry = this.entries.get(key);
    if (entry) {
      this.entries.delete(key);
      this.used -= entry.tile.values.byteLength;
    }
  }
}

/** The page's cache (all layers, all views). */
export const tileValues = new TileValuesCache(TILE_CACHE_BYTES);
