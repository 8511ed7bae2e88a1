// Classic Notebook (Notebook 6 / nbclassic) entry: the notebook loads this file at start-up
// (etc/jupyter/nbconfig/notebook.d/ee-model-widgets.json). It only tells require.js where our
// widget module lives, so that the widget manager finds `ee-model-widgets` when a notebook
// shows one of our layers; index.js itself is loaded lazily, after jupyter-leaflet.
const w = window as any;
if (w.require) {
  w.require.config({
    map: { '*': { 'ee-model-widgets': 'nbextensions/ee-model-widgets/index' } },
  });
}

// The hook every classic notebook extension must export (nothing more to do here).
export function load_ipython_extension(): void {
  // intentionally empty
}
