// AMD (require.js) bundles of our widget module, for the frontends that do not load
// JupyterLab federated extensions: classic Notebook 6 / nbclassic, VS Code, and CDN loaders
// (Colab, @jupyter-widgets/html-manager), which all request `<package>/dist/index.js`.
// The JupyterLab / Notebook 7 extension is built separately by jupyter-builder.
//
// Input is the TypeScript compiler's output in lib/ (`npm run build:lib` runs first).
// `@jupyter-widgets/base` and `jupyter-leaflet` stay external: require.js hands us the
// modules the page already loaded (jupyter-leaflet's own nbextension / CDN bundle), and
// 'leaflet' resolves to the Leaflet that jupyter-leaflet put on the page (lib/leaflet_global.js),
// so no second Leaflet is ever bundled.
const path = require('path');

const externals = ['@jupyter-widgets/base', 'jupyter-leaflet'];
const resolve = { alias: { leaflet$: path.resolve(__dirname, 'lib', 'leaflet_global.js') } };

// The widget module: models and views, an AMD module whose dependencies are `externals`.
const widgetBundle = outDir => ({
  entry: './lib/index.js',
  output: {
    filename: 'index.js',
    path: path.resolve(__dirname, outDir),
    library: { type: 'amd' },
  },
  externals,
  resolve,
  devtool: 'source-map',
});

module.exports = [
  {
    // Loaded by the classic Notebook at start-up: maps 'ee-model-widgets' to index.js.
    entry: './lib/nbextension.js',
    output: {
      filename: 'extension.js',
      path: path.resolve(__dirname, 'ee_model_widgets', 'nbextension'),
      library: { type: 'amd' },
    },
    devtool: 'source-map',
  },
  // Shipped in the wheel under share/jupyter/nbextensions/ee-model-widgets/ (classic, VS Code).
  widgetBundle(path.join('ee_model_widgets', 'nbextension')),
  // Shipped in the npm package for CDN loaders (jsDelivr/unpkg `ee-model-widgets@<v>/dist/index.js`).
  widgetBundle('dist'),
];
