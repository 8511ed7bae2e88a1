// A Leaflet GridLayer whose tiles come from the kernel over the widget comm.
//
// Protocol (custom widget messages; the Python half is ee_model_widgets/widgets/tile_layer.py):
//   view -> kernel  {type: 'tile_request', id, z, x, y}     one per tile Leaflet creates
//   view -> kernel  {type: 'tile_cancel', id}               Leaflet unloaded the tile
//   view -> kernel  {type: 'view', z}                       the map settled on zoom z
//   kernel -> view  {type: 'tile_response', id, status}     buffers[0] = PNG bytes
//   kernel -> view  {type: 'redraw'}                         drop every tile, ask again
// Request ids carry a per-view random prefix: replies reach every view of the model (a map
// displayed twice, a second browser tab), and each view only takes its own.
import { LeafletRasterLayerModel, LeafletRasterLayerView } from 'jupyter-leaflet';
import L from 'leaflet';

import { MODULE_NAME, MODULE_VERSION } from './version';

interface IPending {
  img: HTMLImageElement;
  done: L.DoneCallback;
  coords: L.Coords;
  tries: number;
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
    };
  }
}

// An SVG "error" tile drawn in the browser, for requests the kernel never answered.
function errorTileUrl(text: string): string {
  const svg =
    `<svg xmlns="http://www.w3.org/2000/svg" width="256" height="256">` +
    `<rect x="1" y="1" width="254" height="254" fill="rgba(200,0,0,0.15)" stroke="#c00" stroke-width="2"/>` +
    `<text x="128" y="128" font-family="sans-serif" font-size="14" fill="#900" text-anchor="middle">${text}</text>` +
    `</svg>`;
  return 'data:image/svg+xml;charset=utf-8,' + encodeURIComponent(svg);
}

export class EEKernelTileLayerView extends LeafletRasterLayerView {
  private prefix = Math.random().toString(36).slice(2, 10);
  private counter = 0;
  private pending = new Map<string, IPending>();

  create_obj(): void {
    // eslint-disable-next-line @typescript-eslint/no-this-alias
    const view = this;
    const Grid = L.GridLayer.extend({
      createTile(coords: L.Coords, done: L.DoneCallback): HTMLElement {
        const img = document.createElement('img');
        img.alt = '';
        img.setAttribute('role', 'presentation');
        view.request(img, coords, done);
        return img;
      },
    });
    this.obj = new (Grid as any)({ noWrap: true, ...this.get_options() });
    this.obj.on('tileunload', (e: any) => this.onTileUnload(e.tile as HTMLImageElement));
    this.obj.on('zoomend', () => this.sendView());
    this.model.on('msg:custom', this.onCustom, this);
  }

  private request(img: HTMLImageElement, coords: L.Coords, done: L.DoneCallback, tries = 0): void {
    const id = `${this.prefix}-${this.counter++}`;
    (img as any)._emwRequest = id;
    img.dataset.status = 'pending';
    img.dataset.zxy = `${coords.z}/${coords.x}/${coords.y}`; // lets tests and users find a tile
    const timeoutMs = 1000 * (this.model.get('request_timeout') ?? 60);
    const timer = window.setTimeout(() => this.onTimeout(id), timeoutMs);
    this.pending.set(id, { img, done, coords, tries, timer });
    this.send({ type: 'tile_request', id, z: coords.z, x: coords.x, y: coords.y });
  }

  private onTimeout(id: string): void {
    const p = this.pending.get(id);
    if (!p) {
      return;
    }
    this.pending.delete(id);
    this.send({ type: 'tile_cancel', id });
    if (p.tries < 1) {
      // One retry: the kernel may have dropped the message (IOPub rate limit) or been busy.
      this.request(p.img, p.coords, p.done, p.tries + 1);
      return;
    }
    p.img.dataset.status = 'error';
    p.img.onload = () => p.done(undefined, p.img);
    p.img.src = errorTileUrl('no reply from the kernel');
  }

  private onTileUnload(img: HTMLImageElement): void {
    const id = (img as any)._emwRequest as string | undefined;
    if (id !== undefined) {
      const p = this.pending.get(id);
      if (p) {
        window.clearTimeout(p.timer);
        this.pending.delete(id);
        this.send({ type: 'tile_cancel', id });
      }
    }
    if (img.src && img.src.startsWith('blob:')) {
      URL.revokeObjectURL(img.src);
    }
  }

  private sendView(): void {
    const map = (this.obj as any)._map as L.Map | undefined;
    if (map) {
      this.send({ type: 'view', z: map.getZoom() });
    }
  }

  private onCustom(content: any, buffers?: (ArrayBuffer | DataView)[]): void {
    if (!content || typeof content !== 'object') {
      return;
    }
    if (content.type === 'redraw') {
      this.cancelAll();
      this.obj.redraw();
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
      p.done(new Error('tile reply without image data'), p.img);
      return;
    }
    // Copy into a fresh Uint8Array: in JupyterLab buffers arrive as DataViews over a larger
    // ArrayBuffer, and TS 5.9's Blob typing rejects ArrayBufferLike views.
    const view = buf instanceof DataView ? buf : new DataView(buf);
    const bytes = new Uint8Array(view.byteLength);
    bytes.set(new Uint8Array(view.buffer, view.byteOffset, view.byteLength));
    const url = URL.createObjectURL(new Blob([bytes], { type: 'image/png' }));
    p.img.onload = () => {
      p.img.dataset.status = content.status ?? 'ok';
      p.done(undefined, p.img);
    };
    p.img.onerror = () => {
      p.img.dataset.status = 'error';
      p.done(new Error('the kernel sent an image the browser cannot decode'), p.img);
    };
    p.img.src = url;
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
    this.model.off('msg:custom', this.onCustom, this);
    super.remove();
  }
}
