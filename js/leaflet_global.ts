// Leaflet for the AMD (require.js) bundle: classic Notebook, VS Code, CDN loaders.
//
// There, Leaflet is not an AMD module of its own: jupyter-leaflet's bundle carries it and
// publishes it on `window` (as `L`, or as `ipyL` when another Leaflet was on the page first).
// The AMD build aliases 'leaflet' to this file, so our layer extends the very Leaflet the
// map uses: one Leaflet per page, as in the federated JupyterLab build.
import 'jupyter-leaflet'; // its bundle runs (and sets the global) before this module body

const w = window as any;
const L = w.ipyL ?? w.L;
if (!L || typeof L.GridLayer !== 'function') {
  throw new Error(
    'ee-model-widgets: Leaflet was not found on the page. jupyter-leaflet (installed with ' +
      'ipyleaflet) must load first: `pip install ipyleaflet` into the kernel environment and ' +
      'reload the page.',
  );
}
export default L;
