// A Leaflet GridLayer whose tiles come from the kernel over the widget comm.
//
// Protocol (custom widget messages; the Python half, with the full list, is
// ee_model_widgets/widgets/tile_layer.py):
//   view -> kernel  {type: 'tile_request', id, z, x, y}     one per tile Leaflet creates
//   view -> kernel  {type: 'tile_cancel', id}               Leaflet unloaded the tile
//   view -> kernel  {type: 'tile_sync', sync, ids}          which of these do you still hold?
//   view -> kernel  {type: 'tile_report', resent, lost}     what this view had to ask again / gave up on
//   kernel -> view  {type: 'tile_response', id, status}     buffers[0] = PNG bytes
//   kernel -> view  {type: 'tile_response', id, status, kind: 'data', bands, rows, cols, style}
//                                                           buffers[0] = float32 values
//   kernel -> view  {type: 'tile_sync', sync, held}         the ids still queued or rendering
//   kernel -> view  {type: 'redraw', generation?, style?}   drop every tile, ask again
//   view -> kernel  {type: 'style_sync'}                    a newer `_style` is named but not here: send it
// Request ids carry a per-view random prefix: replies reach every view of the model (a map
// displayed twice, a second browser tab), and each view only takes its own.
//
// A message can be lost between the browser and the kernel (a kernel that dropped it, the
// server's IOPub rate limit, a websocket that reconnected). A request unanswered for STALE_MS is
// therefore asked about; one the kernel does not hold was lost and is sent again, up to
// MAX_RESENDS times. What happens is said on the map (a notice in its corner) and reported to the
// kernel, whose counts feed the panel's status line. The same corner shows the layer's `notice`
// trait (why all its tiles are empty) when no message is being lost.
//
// Every tile is a <canvas>. A PNG reply (a plain KernelTileLayer's tiles, "zoom in" and error
// tiles) is decoded into it. A data reply (a PredictionLayer's) holds the values of the bands its
// vis params show: the view keeps them and colours them with the layer's `_style` trait (the vis
// params compiled in Python, colour.ts), and when `_style` changes it recolours every loaded tile
// from the values it holds, without asking the kernel. A tile names the style version whose bands
// it holds: one newer than the view's waits for that style; one older, for other bands, is
// asked for again. A style named (by a tile or a redraw) but not received is asked for again,
// as a lost request is: its change message can be lost like any other.
//
// The values of the data tiles received are also kept in a bounded cache for the page
// (tile_cache.ts): a tile Leaflet creates again (a zoom back out, a pan back) is coloured from
// it with the current style and never asked for, unless the layer's data generation moved on
// (a new image, model or parameters, or `refresh()` in the kernel).
//
// Zoom changes need nothing special: Leaflet unloads the pending tiles of a zoom it leaves, and
// their `tileunload` cancels them in the kernel.
import { LeafletRasterLayerModel, LeafletRasterLayerView } from 'jupyter-leaflet';
import L from 'leaflet';

import { IStyle, colour, parseStyle, valuesOf } from './colour';
import { ITileValues, tileValues } from './tile_cache';
import { MODULE_NAME, MODULE_VERSION } from './version';

const SYNC_EVERY_MS = 1000; // how often unanswered requests are looked at
const STALE_MS = 2000; // a request unanswered for this long is asked about
const SILENT_MS = 4000; // no answer to a sync for this long: say that the kernel is not answering
const MAX_RESENDS = 3; // a request the kernel lost this often is given up (an error tile)
const NOTICE_MS = 8000; // how long "asked again" stays on the map after the last resend
const STYLE_WAIT_MS = 1500; // a data tile waiting this long for its style makes the view look again
const STYLE_SYNC_MS = 5000; // the kernel is asked to send its style again at most this often

// What a tile canvas carries besides its pixels.
interface ITile extends HTMLCanvasElement {
  _emwRequest?: string;
  _emwCoords?: L.Coords;
  _emwData?: ITileValues;
  _emwDone?: (err?: Error) => void; // Leaflet's done(), called once: the tile is loaded
}

interface IPending {
  img: ITile;
  done: L.DoneCallback;
  coords: L.Coords;
  tries: number; // request_timeout expiries
  resends: number; // times the kernel had lost it
  sentAt: number;
  timer: number;
}

export class EEKernelTileLayerModel extends LeafletRasterLayerModel {
  defaults(): any {
    return {
      ...super.defaults(),
      _model_name: 'EEKernelTileLayerModel',
      _view_name: 'EEKernelTileLayerView',
      _model_module: MODULE_NAME,
      _view_module: MODULE_NAME,
      _model_module_version: MODULE_VERSION,
      _view_module_version: MODULE_VERSION,
      request_timeout: 60,
      _style: {},
      _generation: 0,
    };
  }

  initialize(attributes: any, options: any): void {
    super.initialize(attributes, options);
    // A closed layer (or a kernel restart) leaves tiles nobody can show again.
    this.on('destroy', () => tileValues.forget(this.model_id));
  }
}

// The "error" tile drawn in the browser, for requests the kernel never answered.
function drawErrorTile(tile: ITile, text: string): void {
  tile.width = tile.height = 256;
  const ctx = tile.getContext('2d') as CanvasRenderingContext2D;
  ctx.clearRect(0, 0, 256, 256);
  ctx.fillStyle = 'rgba(200,0,0,0.15)';
  ctx.fillRect(1, 1, 254, 254);
  ctx.strokeStyle = '#c00';
  ctx.lineWidth = 2;
  ctx.strokeRect(1, 1, 254, 254);
  ctx.fillStyle = '#900';
  ctx.font = '14px sans-serif';
  ctx.textAlign = 'center';
  ctx.fillText(text, 128, 128);
}

export class EEKernelTileLayerView extends LeafletRasterLayerView {
  private prefix = Math.random().toString(36).slice(2, 10);
  private counter = 0;
  private pending = new Map<string, IPending>();
  private syncTimer: number | null = null;
  private syncs = 0;
  private asked = new Map<string, string[]>(); // sync id -> request ids it asked about
  private silentSince = 0; // when the oldest unanswered sync was sent (0: none)
  private lastResendAt = 0;
  private resentShown = 0; // requests asked again since the notice last went away
  private lostTiles = new Set<ITile>(); // error tiles of requests given up, still shown
  private dataTiles = new Set<ITile>(); // loaded tiles that hold values (coloured with `style`)
  private style: IStyle | null = null;
  private scratch: ImageData | null = null; // reused by every draw: putImageData copies it
  private styleCheck = 0; // timer: data tiles still wait for their style
  private lastStyleSync = -Infinity; // when the kernel was last asked to send its style again
  private styleNamed = 0; // the newest style version the kernel named (in a tile or a redraw)
  private generation = 0; // the newest data generation of the layer this view knows of
  private notice: L.Control | null = null;
  private noticeDiv: HTMLDivElement | null = null;
  private noticeTimer = 0;

  create_obj(): void {
    // eslint-disable-next-line @typescript-eslint/no-this-alias
    const view = this;
    const Grid = L.GridLayer.extend({
      createTile(coords: L.Coords, done: L.DoneCallback): HTMLElement {
        const tile = document.createElement('canvas') as ITile;
        const size = this.getTileSize();
        tile.width = size.x;
        tile.height = size.y;
        tile.setAttribute('role', 'presentation');
        let loaded = false;
        tile._emwDone = (err?: Error) => {
          if (!loaded) {
            loaded = true; // recoloured or re-sent later: no second fade-in
            done(err, tile);
          }
        };
        if (!view.fromCache(tile, coords)) {
          view.request(tile, coords, done);
        }
        return tile;
      },
      // Leaflet checks the map's wrapping, not noWrap, for x: without this a noWrap layer asks
      // for tiles left and right of the world (x < 0 or x >= 2^z), which have nothing to show.
      _isValidTile(coords: L.Coords): boolean {
        if (this.options.noWrap && (coords.x < 0 || coords.x >= 2 ** coords.z)) {
          return false;
        }
        return (L.GridLayer.prototype as any)._isValidTile.call(this, coords);
      },
    });
    this.obj = new (Grid as any)({ noWrap: true, ...this.get_options() });
    this.obj.on('tileunload', (e: any) => this.onTileUnload(e.tile as ITile));
    this.obj.on('remove', () => this.showNotice('', ''));
    this.obj.on('add', () => this.updateNotice()); // a notice set before the layer was on a map
    this.style = parseStyle(this.model.get('_style'));
    this.newGeneration(this.model.get('_generation'));
    this.model.on('msg:custom', this.onCustom, this);
    this.model.on('change:_style', this.onStyle, this);
    this.model.on('change:_generation', this.onGeneration, this);
    this.model.on('change:notice', this.updateNotice, this);
  }

  // ---- the page's cache of tile values (tile_cache.ts) --------------------------------------
  private onGeneration(): void {
    this.newGeneration(this.model.get('_generation'));
  }

  // The layer's data moved on to `generation` (from its trait, a redraw or a tile's stamp):
  // tiles cached under an older one are never shown again.
  private newGeneration(generation: unknown): void {
    if (typeof generation === 'number' && generation > this.generation) {
      this.generation = generation;
      tileValues.forget(this.model.model_id, generation);
    }
  }

  // Show the cached values of this tile with the current style instead of asking the kernel.
  // False if there are none (or no style yet: the kernel's tiles then say why).
  fromCache(tile: ITile, coords: L.Coords): boolean {
    const style = this.style;
    const { z, x, y } = coords;
    const data = style && tileValues.get(this.model.model_id, this.generation, style.bands, z, x, y);
    if (!data) {
      return false;
    }
    tile._emwRequest = undefined;
    tile._emwCoords = coords;
    tile._emwData = data;
    tile.dataset.zxy = `${coords.z}/${coords.x}/${coords.y}`;
    tile.dataset.status = 'ok';
    tile.dataset.source = 'cache';
    this.dataTiles.add(tile);
    // Drawn once Leaflet has registered the tile (createTile has returned): its done() is
    // ignored before that.
    queueMicrotask(() => {
      if (this.dataTiles.has(tile) && tile._emwData === data) {
        this.draw(tile);
      }
    });
    return true;
  }

  private request(img: ITile, coords: L.Coords, done: L.DoneCallback, tries = 0): void {
    const id = `${this.prefix}-${this.counter++}`;
    img._emwRequest = id;
    img._emwCoords = coords;
    if (!img.classList.contains('leaflet-tile-loaded')) {
      img.dataset.status = 'pending';
    }
    img.dataset.zxy = `${coords.z}/${coords.x}/${coords.y}`; // lets tests and users find a tile
    const timeoutMs = 1000 * (this.model.get('request_timeout') ?? 60);
    const timer = window.setTimeout(() => this.onTimeout(id), timeoutMs);
    this.pending.set(id, { img, done, coords, tries, resends: 0, sentAt: 0, timer });
    this.sendRequest(id);
  }

  private sendRequest(id: string): void {
    const p = this.pending.get(id);
    if (!p) {
      return;
    }
    p.sentAt = performance.now();
    this.send({ type: 'tile_request', id, z: p.coords.z, x: p.coords.x, y: p.coords.y });
    if (this.syncTimer === null) {
      this.syncTimer = window.setInterval(() => this.checkPending(), SYNC_EVERY_MS);
    }
  }

  // Ask the kernel about requests that are taking long; say so if it does not answer at all.
  private checkPending(): void {
    const now = performance.now();
    if (this.pending.size === 0) {
      window.clearInterval(this.syncTimer as number);
      this.syncTimer = null;
      this.silentSince = 0;
      this.asked.clear();
      this.updateNotice();
      return;
    }
    const stale = [...this.pending].filter(([, p]) => now - p.sentAt > STALE_MS).map(([id]) => id);
    if (stale.length === 0) {
      this.updateNotice();
      return;
    }
    const sync = `${this.prefix}-s${this.syncs++}`;
    this.asked.set(sync, stale);
    if (this.asked.size > 20) {
      this.asked.delete(this.asked.keys().next().value as string); // a sync that never came back
    }
    if (this.silentSince === 0) {
      this.silentSince = now;
    }
    this.send({ type: 'tile_sync', sync, ids: stale });
    this.updateNotice();
  }

  private onSync(content: any): void {
    const ids = this.asked.get(content.sync);
    if (ids === undefined) {
      return; // another view's sync, or one answered already
    }
    this.asked.delete(content.sync);
    this.silentSince = 0;
    const held = new Set<string>(Array.isArray(content.held) ? content.held : []);
    let resent = 0;
    let lost = 0;
    for (const id of ids) {
      const p = this.pending.get(id);
      // Replies are sent before the kernel forgets a request, and arrive in order: a request
      // still pending here and not held there was lost on the way, in one direction or the other.
      if (!p || held.has(id)) {
        continue;
      }
      if (p.resends >= MAX_RESENDS) {
        this.giveUp(id, 'no reply from the kernel');
        lost++;
      } else {
        p.resends++;
        resent++;
        this.sendRequest(id);
      }
    }
    if (resent) {
      this.lastResendAt = performance.now();
      this.resentShown += resent;
    }
    if (resent || lost) {
      this.send({ type: 'tile_report', resent, lost });
    }
    this.updateNotice();
  }

  private onTimeout(id: string): void {
    const p = this.pending.get(id);
    if (!p) {
      return;
    }
    this.send({ type: 'tile_cancel', id });
    if (p.tries < 1) {
      // One more try with a new id: the kernel may have been too busy to answer in time.
      this.pending.delete(id);
      this.request(p.img, p.coords, p.done, p.tries + 1);
      return;
    }
    this.giveUp(id, 'no reply from the kernel');
    this.send({ type: 'tile_report', resent: 0, lost: 1 });
    this.updateNotice();
  }

  private giveUp(id: string, text: string): void {
    const p = this.pending.get(id);
    if (!p) {
      return;
    }
    window.clearTimeout(p.timer);
    this.pending.delete(id);
    p.img.dataset.status = 'error';
    this.lostTiles.add(p.img);
    this.dataTiles.delete(p.img);
    drawErrorTile(p.img, text);
    this.finish(p, undefined);
  }

  private finish(p: IPending, err: Error | undefined): void {
    if (p.img._emwDone) {
      p.img._emwDone(err);
    } else {
      p.done(err, p.img);
    }
  }

  private onTileUnload(img: ITile): void {
    this.dataTiles.delete(img);
    const id = img._emwRequest;
    if (id !== undefined) {
      const p = this.pending.get(id);
      if (p) {
        window.clearTimeout(p.timer);
        this.pending.delete(id);
        this.send({ type: 'tile_cancel', id });
      }
    }
    if (this.lostTiles.delete(img)) {
      this.updateNotice();
    }
  }

  // ---- the notice on the map ----------------------------------------------------------------
  private updateNotice(): void {
    const now = performance.now();
    if (this.silentSince && now - this.silentSince > SILENT_MS) {
      const s = Math.round((now - this.silentSince) / 1000);
      this.showNotice(
        'waiting',
        `Waiting for the kernel: ${this.pending.size} tile(s) asked for, no answer for ${s} s ` +
          '(is a cell running, or the kernel restarting?).'
      );
    } else if (this.lostTiles.size) {
      this.showNotice(
        'lost',
        `${this.lostTiles.size} tile(s) got no reply from the kernel (red tiles). Pan or zoom to ask again.`
      );
    } else if (this.resentShown && now - this.lastResendAt < NOTICE_MS) {
      this.showNotice(
        'resent',
        `${this.resentShown} tile request(s) were lost on the way to or from the kernel and sent again.`
      );
      window.clearTimeout(this.noticeTimer);
      this.noticeTimer = window.setTimeout(() => this.updateNotice(), NOTICE_MS);
    } else {
      this.resentShown = 0;
      // The layer's own word on why its tiles are all empty (PredictionLayer.notice), if any.
      const notice = String(this.model.get('notice') ?? '');
      this.showNotice(notice ? 'layer' : '', notice);
    }
  }

  private showNotice(state: string, text: string): void {
    const map = (this.obj as any)._map as L.Map | undefined;
    if (!state || !map) {
      if (this.notice) {
        this.notice.remove();
        this.notice = null;
        this.noticeDiv = null;
      }
      return;
    }
    if (!this.notice) {
      const div = L.DomUtil.create('div', 'emw-tile-notice');
      div.dataset.layer = this.model.get('class_name') ?? ''; // which layer speaks (a map may have several)
      div.style.cssText =
        'background: rgba(255,255,255,0.92); padding: 3px 6px; border-radius: 4px; max-width: 320px;' +
        'font: 12px sans-serif; border: 1px solid #c60;';
      const Notice = L.Control.extend({ onAdd: () => div });
      this.notice = new (Notice as any)({ position: 'bottomleft' }) as L.Control;
      this.notice.addTo(map);
      this.noticeDiv = div;
    }
    const div = this.noticeDiv as HTMLDivElement;
    div.dataset.state = state;
    div.style.color = state === 'resent' ? '#555' : '#900';
    div.textContent = text;
  }

  private onCustom(content: any, buffers?: (ArrayBuffer | DataView)[]): void {
    if (!content || typeof content !== 'object') {
      return;
    }
    if (content.type === 'redraw') {
      this.newGeneration(content.generation); // before the tiles are made again
      this.styleIsNamed(content.style);
      this.cancelAll();
      this.lostTiles.clear();
      this.dataTiles.clear();
      this.obj.redraw();
      this.updateNotice();
      return;
    }
    if (content.type === 'tile_sync') {
      this.onSync(content);
      return;
    }
    if (content.type !== 'tile_response') {
      return;
    }
    const p = this.pending.get(content.id);
    if (!p) {
      return; // another view's request, or a tile that was unloaded meanwhile
    }
    window.clearTimeout(p.timer);
    this.pending.delete(content.id);
    const buf = buffers && buffers[0];
    if (!buf) {
      p.img.dataset.status = 'error';
      this.finish(p, new Error('tile reply without image data'));
      return;
    }
    if (content.kind === 'data') {
      this.onData(p, content, buf);
      return;
    }
    this.dataTiles.delete(p.img);
    // Copy into a fresh Uint8Array: in JupyterLab buffers arrive as DataViews over a larger
    // ArrayBuffer, and TS 5.9's Blob typing rejects ArrayBufferLike views.
    const view = buf instanceof DataView ? buf : new DataView(buf);
    const bytes = new Uint8Array(view.byteLength);
    bytes.set(new Uint8Array(view.buffer, view.byteOffset, view.byteLength));
    createImageBitmap(new Blob([bytes], { type: 'image/png' })).then(
      bitmap => {
        if (p.img._emwRequest !== content.id) {
          return; // asked again meanwhile (unloaded, or a newer reply is on its way)
        }
        p.img.width = bitmap.width;
        p.img.height = bitmap.height;
        const ctx = p.img.getContext('2d') as CanvasRenderingContext2D;
        ctx.clearRect(0, 0, bitmap.width, bitmap.height);
        ctx.drawImage(bitmap, 0, 0);
        bitmap.close();
        p.img.dataset.status = content.status ?? 'ok';
        p.img.dataset.source = 'kernel';
        this.finish(p, undefined);
      },
      () => {
        p.img.dataset.status = 'error';
        this.finish(p, new Error('the kernel sent an image the browser cannot decode'));
      }
    );
  }

  // ---- data tiles: coloured here, recoloured when the style changes ---------------------------
  private onData(p: IPending, content: any, buf: ArrayBuffer | DataView): void {
    const { bands, rows, cols } = content;
    const values = valuesOf(buf, bands * rows * cols);
    const positions: number[] = Array.isArray(content.positions) ? content.positions : [];
    if (!values) {
      p.img.dataset.status = 'error';
      this.finish(p, new Error('tile reply with a data buffer of the wrong size'));
      return;
    }
    const data = { values, bands: positions, rows, cols, style: content.style };
    this.styleIsNamed(content.style);
    p.img._emwData = data;
    p.img.dataset.status = content.status ?? 'ok';
    p.img.dataset.source = 'kernel';
    // Kept for a later showing under the generation it was read with (never newer than its
    // values): a stamp newer than this view knew also means that older tiles are stale.
    if (typeof content.generation === 'number' && (content.status ?? 'ok') === 'ok') {
      this.newGeneration(content.generation);
      if (content.generation === this.generation) {
        const { z, x, y } = p.coords;
        tileValues.put(this.model.model_id, content.generation, z, x, y, data);
      }
    }
    this.dataTiles.add(p.img);
    this.draw(p.img);
  }

  // Colour a data tile with the view's style, or wait for the style its data were made for, or
  // ask again when the style has moved on to other bands.
  private draw(tile: ITile): void {
    const data = tile._emwData;
    if (!data) {
      return;
    }
    const style = this.style;
    if (!style || style.bands.join(',') !== data.bands.join(',')) {
      const asking = tile._emwRequest !== undefined && this.pending.has(tile._emwRequest);
      if (style && data.style < style.version && !asking && tile._emwCoords && tile._emwDone) {
        if (!this.fromCache(tile, tile._emwCoords)) {
          this.request(tile, tile._emwCoords, tile._emwDone as L.DoneCallback);
        }
      }
      this.checkStyleSoon(); // otherwise its style is on its way (onStyle draws it)
      return;
    }
    if (tile.width !== data.cols || tile.height !== data.rows) {
      tile.width = data.cols;
      tile.height = data.rows;
    }
    const ctx = tile.getContext('2d') as CanvasRenderingContext2D;
    if (!this.scratch || this.scratch.width !== data.cols || this.scratch.height !== data.rows) {
      this.scratch = ctx.createImageData(data.cols, data.rows);
    }
    const image = this.scratch;
    colour(data.values, data.rows * data.cols, style, image.data);
    ctx.putImageData(image, 0, 0);
    tile.dataset.style = String(style.version);
    if (tile._emwDone) {
      tile._emwDone(undefined);
    }
  }

  // A tile waiting for a style that never comes would stay blank (its change message can be
  // lost, like a tile request, e.g. while a reopened page restores its widgets): while tiles
  // wait, read the model's style again every STYLE_WAIT_MS (a change event may have come
  // before this view listened), and ask the kernel to send its current style again, at most
  // every STYLE_SYNC_MS, until none waits (that answer can be lost too).
  private checkStyleSoon(): void {
    if (this.styleCheck) {
      return;
    }
    this.styleCheck = window.setTimeout(() => {
      this.styleCheck = 0;
      const current = parseStyle(this.model.get('_style'));
      if (current && current.version !== this.style?.version) {
        this.onStyle();
      }
      const version = this.style ? String(this.style.version) : '';
      const asking = (t: ITile) => t._emwRequest !== undefined && this.pending.has(t._emwRequest);
      const waiting =
        (this.style?.version ?? 0) < this.styleNamed ||
        [...this.dataTiles].some((t) => t.dataset.style !== version && !asking(t));
      if (!waiting) {
        return;
      }
      if (performance.now() - this.lastStyleSync > STYLE_SYNC_MS) {
        this.lastStyleSync = performance.now();
        this.send({ type: 'style_sync' });
      }
      this.checkStyleSoon();
    }, STYLE_WAIT_MS);
  }

  // The kernel has a style this new (its tiles or a redraw say so): until it is here, look for it.
  private styleIsNamed(version: unknown): void {
    if (typeof version === 'number' && version > this.styleNamed) {
      this.styleNamed = version;
      if ((this.style?.version ?? 0) < version) {
        this.checkStyleSoon();
      }
    }
  }

  private onStyle(): void {
    this.style = parseStyle(this.model.get('_style'));
    const started = performance.now();
    for (const tile of [...this.dataTiles]) {
      this.draw(tile);
    }
    // How long the recolouring took here (read by benchmarks/browser_layer.py).
    const container = this.obj.getContainer ? this.obj.getContainer() : null;
    if (container) {
      container.dataset.restyleMs = (performance.now() - started).toFixed(2);
    }
  }

  private cancelAll(): void {
    for (const [id, p] of this.pending) {
      window.clearTimeout(p.timer);
      this.send({ type: 'tile_cancel', id });
    }
    this.pending.clear();
  }

  remove(): void {
    this.cancelAll();
    if (this.syncTimer !== null) {
      window.clearInterval(this.syncTimer);
      this.syncTimer = null;
    }
    window.clearTimeout(this.noticeTimer);
    this.showNotice('', '');
    this.model.off('msg:custom', this.onCustom, this);
    this.model.off('change:_style', this.onStyle, this);
    this.model.off('change:_generation', this.onGeneration, this);
    this.model.off('change:notice', this.updateNotice, this);
    window.clearTimeout(this.styleCheck);
    this.dataTiles.clear();
    super.remove();
  }
}
