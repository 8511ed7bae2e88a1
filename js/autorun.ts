// Runs a notebook's cells when it opens, only if the notebook asks for it in its metadata
// ({"ee_model_widgets": {"autorun": true}}) AND the user trusts it (`jupyter trust`), the same
// trust JupyterLab requires before it shows a notebook's HTML/JS outputs. `make demo` trusts
// the quickstart, so a newcomer sees predictions without reading or clicking anything.
//
// Duck-typed against the shell and NotebookPanel so that we need no @jupyterlab/notebook
// dependency; works in JupyterLab 4 and Notebook 7, whose shells both signal `currentChanged`.

interface ISignal {
  connect(fn: (...args: any[]) => void): void;
}

const done = new WeakSet<object>();

async function maybeRun(app: any, panel: any): Promise<void> {
  if (!panel || done.has(panel) || !panel.context || !panel.sessionContext || !panel.content) {
    return;
  }
  await panel.context.ready;
  const meta = panel.model?.getMetadata?.('ee_model_widgets');
  if (!meta || meta.autorun !== true) {
    return;
  }
  const cells: any[] = (panel.content.widgets ?? []).filter((c: any) => c.model?.type === 'code');
  if (!cells.length || !cells.every(c => c.model.trusted === true)) {
    return; // an untrusted notebook never runs by itself
  }
  await panel.sessionContext.ready;
  // Only in the tab the user is looking at: a notebook restored in a background tab (or a
  // browser tab in the background) runs when it is shown, not before.
  if (done.has(panel) || app.shell.currentWidget !== panel) {
    return;
  }
  if (document.visibilityState !== 'visible') {
    const retry = (): void => {
      document.removeEventListener('visibilitychange', retry);
      void maybeRun(app, panel);
    };
    document.addEventListener('visibilitychange', retry);
    return;
  }
  done.add(panel);
  await app.commands.execute('notebook:run-all-cells');
}

const autorun = {
  id: 'ee-model-widgets:autorun',
  autoStart: true,
  activate: (app: any): void => {
    void app.restored.then(() => {
      void maybeRun(app, app.shell.currentWidget);
      (app.shell.currentChanged as ISignal | undefined)?.connect((_: unknown, args: any) => {
        void maybeRun(app, args?.newValue ?? app.shell.currentWidget);
      });
    });
  },
};

export default autorun;
