import {
  ILayoutRestorer,
  JupyterFrontEnd,
  JupyterFrontEndPlugin
} from '@jupyterlab/application';
import {
  Dialog,
  ICommandPalette,
  IToolbarWidgetRegistry,
  showDialog,
  showErrorMessage
} from '@jupyterlab/apputils';
import { URLExt } from '@jupyterlab/coreutils';
import { INotebookTracker, NotebookPanel } from '@jupyterlab/notebook';
import { ServerConnection } from '@jupyterlab/services';
import { ISettingRegistry } from '@jupyterlab/settingregistry';
import { CommandToolbarButton } from '@jupyterlab/ui-components';

import { CloudPromoteClient, Job, Resources, Severity } from './api';
import { promoteNotebook } from './dialog';
import { JobEvents } from './events';
import { jobsIcon, promoteIcon } from './icons';
import { JobsModel } from './model';
import { JobsPanel } from './panel';
import { fileWidget, imageType } from './viewer';

const PLUGIN_ID = 'jupyter-cloudpromote:plugin';
const TOOLBAR_ITEM = 'cloudpromote-promote';

export const CommandIDs = {
  promote: 'cloudpromote:promote',
  openPanel: 'cloudpromote:open-panel'
} as const;

interface ISettings {
  defaultBackend: string;
  minimumSeverity: Severity;
  defaultResources: Resources;
  openPanelAfterSubmit: boolean;
  saveBeforePromote: 'ask' | 'always';
  followLogs: boolean;
  refreshInterval: number;
}

const DEFAULT_SETTINGS: ISettings = {
  defaultBackend: '',
  minimumSeverity: 'info',
  defaultResources: { cpus: null, memory: null, gpus: 0, time_limit: null },
  openPanelAfterSubmit: true,
  saveBeforePromote: 'ask',
  followLogs: true,
  refreshInterval: 10
};

/** Save the notebook so the job runs what the user sees; false when the user declines. */
async function ensureSaved(
  panel: NotebookPanel,
  mode: ISettings['saveBeforePromote']
) {
  if (!panel.context.model.dirty) {
    return true;
  }
  if (mode === 'ask') {
    const answer = await showDialog({
      title: 'Save the notebook first?',
      body: 'The job runs the notebook as saved on disk. Save your changes and continue?',
      buttons: [
        Dialog.cancelButton(),
        Dialog.okButton({ label: 'Save and continue' })
      ]
    });
    if (!answer.button.accept) {
      return false;
    }
  }
  await panel.context.save();
  return true;
}

function showCell(panel: NotebookPanel, index: number): void {
  const notebook = panel.content;
  if (index < 0 || index >= notebook.widgets.length) {
    return;
  }
  notebook.activeCellIndex = index;
  void notebook.scrollToItem(index, 'center');
}

const plugin: JupyterFrontEndPlugin<void> = {
  id: PLUGIN_ID,
  description:
    'Promote notebooks to batch jobs and watch them in a sidebar panel.',
  autoStart: true,
  requires: [INotebookTracker, ISettingRegistry, IToolbarWidgetRegistry],
  optional: [ICommandPalette, ILayoutRestorer],
  activate: (
    app: JupyterFrontEnd,
    tracker: INotebookTracker,
    settingRegistry: ISettingRegistry,
    toolbarRegistry: IToolbarWidgetRegistry,
    palette: ICommandPalette | null,
    restorer: ILayoutRestorer | null
  ) => {
    const serverSettings = ServerConnection.makeSettings();
    const client = new CloudPromoteClient((path, init) =>
      ServerConnection.makeRequest(
        URLExt.join(serverSettings.baseUrl, path),
        init,
        serverSettings
      )
    );
    let settings: ISettings = { ...DEFAULT_SETTINGS };
    const model = new JobsModel(client);

    const openText = (title: string, text: string) => {
      app.shell.add(fileWidget(title, text), 'main');
    };
    const openOutput = async (job: Job, path: string) => {
      try {
        const blob = await client.outputFile(job.id, path);
        app.shell.add(
          fileWidget(`${path} (job ${job.id})`, blob, imageType(path)),
          'main'
        );
      } catch (error) {
        await showErrorMessage('Cannot open the output', error as Error);
      }
    };

    const panel = new JobsPanel({
      model,
      client,
      followLogs: () => settings.followLogs,
      openText,
      openOutput
    });
    panel.title.icon = jobsIcon;
    app.shell.add(panel, 'left', { rank: 850 });
    restorer?.add(panel, 'cloudpromote-jobs');

    const events = new JobEvents(model, () => settings.refreshInterval);
    panel.disposed.connect(() => events.dispose());

    settingRegistry
      .load(PLUGIN_ID)
      .then(loaded => {
        const update = () => {
          settings = {
            ...DEFAULT_SETTINGS,
            ...(loaded.composite as unknown as ISettings)
          };
        };
        update();
        loaded.changed.connect(update);
      })
      .catch(error => console.warn('cloudpromote: settings not loaded', error));

    app.commands.addCommand(CommandIDs.promote, {
      label: 'Promote to job',
      caption:
        'Turn this notebook into a batch job: check, package, submit and watch it',
      icon: promoteIcon,
      isEnabled: () => tracker.currentWidget !== null,
      execute: async args => {
        // The toolbar button names its own notebook: the tracker's current notebook can be
        // another one (split view, or a tab restored after the clicked one).
        const path = typeof args.path === 'string' ? args.path : '';
        const current = path
          ? (tracker.find(panel => panel.context.path === path) ?? null)
          : tracker.currentWidget;
        if (!current) {
          return;
        }
        await current.context.ready;
        if (!(await ensureSaved(current, settings.saveBeforePromote))) {
          return;
        }
        const job = await promoteNotebook({
          client,
          path: current.context.localPath,
          defaultBackend: settings.defaultBackend,
          minimumSeverity: settings.minimumSeverity,
          defaultResources: settings.defaultResources,
          showCell: index => showCell(current, index)
        });
        if (!job) {
          return;
        }
        model.upsert(job);
        model.selectedId = job.id;
        if (settings.openPanelAfterSubmit) {
          app.shell.activateById(panel.id);
        }
      }
    });
    app.commands.addCommand(CommandIDs.openPanel, {
      label: 'Show Promoted Jobs',
      caption: 'Open the panel of promoted notebook jobs',
      icon: jobsIcon,
      execute: () => app.shell.activateById(panel.id)
    });
    // The "Promote to job" item of the notebook toolbar (declared in schema/plugin.json).
    toolbarRegistry.addFactory<NotebookPanel>(
      'Notebook',
      TOOLBAR_ITEM,
      (notebook: NotebookPanel) =>
        new CommandToolbarButton({
          commands: app.commands,
          id: CommandIDs.promote,
          label: 'Promote to job',
          args: { path: notebook.context.path, toolbar: true }
        })
    );
    tracker.currentChanged.connect(() =>
      app.commands.notifyCommandChanged(CommandIDs.promote)
    );

    palette?.addItem({
      command: CommandIDs.promote,
      category: 'Cloud Promote'
    });
    palette?.addItem({
      command: CommandIDs.openPanel,
      category: 'Cloud Promote'
    });

    panel.title.caption = 'Promoted jobs';
    model
      .refresh()
      .catch(error => console.warn('cloudpromote: cannot list jobs', error));
  }
};

export default plugin;
