// JupyterLab / Notebook 7 plugin: registers our widget module with the widget manager.
import { IJupyterWidgetRegistry } from '@jupyter-widgets/base';

import autorun from './autorun';
import { MODULE_NAME, MODULE_VERSION } from './version';

const plugin = {
  id: `${MODULE_NAME}:plugin`,
  requires: [IJupyterWidgetRegistry],
  autoStart: true,
  activate: (_app: unknown, registry: IJupyterWidgetRegistry): void => {
    registry.registerWidget({
      name: MODULE_NAME,
      version: MODULE_VERSION,
      // Loaded lazily so that jupyter-leaflet (a shared singleton) is only pulled in when
      // a notebook actually shows one of our layers.
      exports: async () => import('./index'),
    });
  },
};

export default [plugin, autorun];
