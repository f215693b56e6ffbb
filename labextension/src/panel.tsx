/**
 * The jobs panel in the left sidebar: filters, the job list (newest first), and the
 * selected job's details with actions, live logs, outputs and history.
 */
import {
  Dialog,
  ReactWidget,
  showDialog,
  showErrorMessage
} from '@jupyterlab/apputils';
import { PageConfig, URLExt } from '@jupyterlab/coreutils';
import { UseSignal } from '@jupyterlab/ui-components';
import React, { useEffect, useRef, useState } from 'react';

import {
  Artifact,
  CloudPromoteClient,
  isTerminal,
  Job,
  JOB_STATUSES,
  JobStatus,
  LogPhase,
  OutputFile
} from './api';
import {
  durationSeconds,
  failureReason,
  formatDuration,
  JobsModel,
  notebookName
} from './model';

export interface IPanelOptions {
  model: JobsModel;
  client: CloudPromoteClient;
  followLogs: () => boolean;
  /** Open text (the promoted script, requirements, Dockerfile) in the main area. */
  openText: (title: string, text: string) => void;
  /** Open one output file of a job in the main area. */
  openOutput: (job: Job, path: string) => Promise<void>;
}

const STATUS_GLYPH: Record<JobStatus, string> = {
  pending: '○',
  building: '◔',
  queued: '◑',
  running: '◕',
  cancelling: '⊘',
  succeeded: '✓',
  failed: '✕',
  cancelled: '⊘'
};

export function StatusBadge(props: { status: JobStatus }): JSX.Element {
  return (
    <span
      className={`jp-CloudPromote-status jp-CloudPromote-status-${props.status}`}
      data-status={props.status}
    >
      <span aria-hidden="true" className="jp-CloudPromote-statusGlyph">
        {STATUS_GLYPH[props.status] ?? '?'}
      </span>
      {props.status}
    </span>
  );
}

function formatTime(seconds: number): string {
  return new Date(seconds * 1000).toLocaleString();
}

function useNow(active: boolean): number {
  const [now, setNow] = useState(Date.now() / 1000);
  useEffect(() => {
    if (!active) {
      return;
    }
    const timer = window.setInterval(() => setNow(Date.now() / 1000), 1000);
    return () => window.clearInterval(timer);
  }, [active]);
  return now;
}

export class JobsPanel extends ReactWidget {
  constructor(private readonly options: IPanelOptions) {
    super();
    this.addClass('jp-CloudPromote-panel');
    this.id = 'cloudpromote-jobs';
    this.title.caption = 'Promoted jobs';
  }

  get model(): JobsModel {
    return this.options.model;
  }

  render(): JSX.Element {
    return (
      <UseSignal signal={this.options.model.changed}>
        {() => <JobsView {...this.options} />}
      </UseSignal>
    );
  }
}

function JobsView(props: IPanelOptions): JSX.Element {
  const { model } = props;
  const jobs = model.visibleJobs;
  const now = useNow(model.hasActiveJobs);
  const listRef = useRef<HTMLUListElement>(null);

  const onListKey = (event: React.KeyboardEvent) => {
    if (event.key !== 'ArrowDown' && event.key !== 'ArrowUp') {
      return;
    }
    event.preventDefault();
    const index = jobs.findIndex(job => job.id === model.selectedId);
    const next =
      event.key === 'ArrowDown'
        ? Math.min(jobs.length - 1, index + 1)
        : Math.max(0, index - 1);
    if (jobs[next]) {
      model.selectedId = jobs[next].id;
      const item = listRef.current?.querySelector<HTMLElement>(
        `[data-job-id="${jobs[next].id}"]`
      );
      item?.focus();
    }
  };

  return (
    <div className="jp-CloudPromote-view">
      <div className="jp-CloudPromote-header">
        <h2 className="jp-CloudPromote-title">Promoted jobs</h2>
        <button
          className="jp-Button jp-mod-styled jp-mod-minimal"
          aria-label="Refresh the job list"
          title="Refresh"
          onClick={() => {
            model
              .refresh()
              .catch(error => showErrorMessage('Refresh failed', error));
          }}
        >
          ⟳
        </button>
      </div>
      <div className="jp-CloudPromote-filters" role="search">
        <input
          className="jp-mod-styled"
          type="search"
          placeholder="Search notebooks"
          aria-label="Search jobs by notebook name"
          value={model.filter.search}
          onChange={event => (model.filter = { search: event.target.value })}
        />
        <select
          className="jp-mod-styled"
          aria-label="Filter by status"
          value={model.filter.status}
          onChange={event =>
            (model.filter = { status: event.target.value as JobStatus | '' })
          }
        >
          <option value="">All statuses</option>
          {JOB_STATUSES.map(status => (
            <option key={status} value={status}>
              {status}
            </option>
          ))}
        </select>
        <select
          className="jp-mod-styled"
          aria-label="Filter by backend"
          value={model.filter.backend}
          onChange={event => (model.filter = { backend: event.target.value })}
        >
          <option value="">All backends</option>
          {model.backends.map(backend => (
            <option key={backend} value={backend}>
              {backend}
            </option>
          ))}
        </select>
      </div>
      {model.size === 0 && model.loaded ? (
        <div className="jp-CloudPromote-empty">
          <p>No jobs yet.</p>
          <p>
            Open a notebook and click <strong>Promote to job</strong> in its
            toolbar (or run <em>Promote Notebook to Job</em> from the command
            palette). The dialog checks the notebook, shows its requirements and
            submits it; the job then appears here with its live status and logs.
          </p>
        </div>
      ) : (
        <ul
          ref={listRef}
          className="jp-CloudPromote-jobList"
          role="listbox"
          aria-label="Jobs, newest first"
          onKeyDown={onListKey}
        >
          {jobs.map(job => (
            <JobRow
              key={job.id}
              job={job}
              now={now}
              selected={job.id === model.selectedId}
              onSelect={() => (model.selectedId = job.id)}
            />
          ))}
          {jobs.length === 0 && model.size > 0 && (
            <li className="jp-CloudPromote-noMatch">
              No job matches the filters.
            </li>
          )}
        </ul>
      )}
      {model.selected && (
        <JobDetails key={model.selected.id} job={model.selected} {...props} />
      )}
    </div>
  );
}

function JobRow(props: {
  job: Job;
  now: number;
  selected: boolean;
  onSelect: () => void;
}): JSX.Element {
  const { job } = props;
  const reason = failureReason(job);
  return (
    <li
      className={`jp-CloudPromote-job${props.selected ? ' jp-mod-selected' : ''}`}
      role="option"
      aria-selected={props.selected}
      tabIndex={props.selected ? 0 : -1}
      data-job-id={job.id}
      data-status={job.status}
      onClick={props.onSelect}
      onKeyDown={event => {
        if (event.key === 'Enter' || event.key === ' ') {
          event.preventDefault();
          props.onSelect();
        }
      }}
    >
      <div className="jp-CloudPromote-jobLine">
        <span className="jp-CloudPromote-jobName" title={job.notebook}>
          {notebookName(job)}
        </span>
        <StatusBadge status={job.status} />
      </div>
      <div className="jp-CloudPromote-jobMeta">
        <span>{job.backend}</span>
        <span title={formatTime(job.created)}>{formatTime(job.created)}</span>
        <span aria-label="duration">
          {formatDuration(durationSeconds(job, props.now))}
        </span>
      </div>
      {reason && (
        <div className="jp-CloudPromote-jobReason" title={reason}>
          {reason}
        </div>
      )}
    </li>
  );
}

type DetailTab = 'logs' | 'outputs' | 'files' | 'history';

/**
 * The tab a key moves to in a horizontal WAI-ARIA tab list of `count` tabs, from the
 * tab at `index`: ArrowLeft/ArrowRight wrap around, Home and End go to the ends.
 * Undefined for any other key (the event is then left alone).
 */
export function tabKeyTarget(
  key: string,
  index: number,
  count: number
): number | undefined {
  if (count <= 0) {
    return undefined;
  }
  switch (key) {
    case 'ArrowRight':
      return (index + 1) % count;
    case 'ArrowLeft':
      return (index - 1 + count) % count;
    case 'Home':
      return 0;
    case 'End':
      return count - 1;
    default:
      return undefined;
  }
}

function JobDetails(props: IPanelOptions & { job: Job }): JSX.Element {
  const { job, client, model } = props;
  const [tab, setTab] = useState<DetailTab>('logs');
  const tabListRef = useRef<HTMLDivElement>(null);
  const [busy, setBusy] = useState(false);
  const terminal = isTerminal(job.status);

  const act = async (label: string, action: () => Promise<void>) => {
    setBusy(true);
    try {
      await action();
    } catch (error) {
      await showErrorMessage(`${label} failed`, error as Error);
    } finally {
      setBusy(false);
    }
  };

  const cancel = () =>
    act('Cancel', async () => {
      model.upsert(await client.cancel(job.id));
    });
  const rerun = () =>
    act('Rerun', async () => {
      const created = await client.rerun(job.id);
      model.upsert(created);
      model.selectedId = created.id;
    });
  const remove = () =>
    act('Delete', async () => {
      const answer = await showDialog({
        title: 'Delete job',
        body: `Delete job ${job.id} of ${notebookName(job)} and its logs and outputs?`,
        buttons: [Dialog.cancelButton(), Dialog.warnButton({ label: 'Delete' })]
      });
      if (answer.button.accept) {
        await client.remove(job.id);
        model.remove(job.id);
      }
    });

  const tabs: { id: DetailTab; label: string }[] = [
    { id: 'logs', label: 'Logs' },
    { id: 'outputs', label: 'Outputs' },
    { id: 'files', label: 'Files' },
    { id: 'history', label: 'History' }
  ];

  // Roving tabindex: only the selected tab is in the Tab order; the arrow keys, Home
  // and End move between tabs and activate the one they land on.
  const onTabKey = (event: React.KeyboardEvent) => {
    // From the focused tab (normally the selected one, as focus activates).
    const focused = (event.target as HTMLElement).closest('[role="tab"]');
    let index = tabs.findIndex(
      item => focused?.id === `cloudpromote-tab-${item.id}`
    );
    if (index < 0) {
      index = tabs.findIndex(item => item.id === tab);
    }
    const next = tabKeyTarget(event.key, index, tabs.length);
    if (next === undefined) {
      return;
    }
    event.preventDefault();
    setTab(tabs[next].id);
    tabListRef.current
      ?.querySelector<HTMLElement>(`#cloudpromote-tab-${tabs[next].id}`)
      ?.focus();
  };

  return (
    <section className="jp-CloudPromote-details" aria-label={`Job ${job.id}`}>
      <div className="jp-CloudPromote-detailsHeader">
        <strong title={job.notebook}>{notebookName(job)}</strong>
        <StatusBadge status={job.status} />
      </div>
      <div className="jp-CloudPromote-detailsMeta">
        job <code>{job.id}</code> on <code>{job.backend}</code> (
        {job.backend_kind})
        {job.exit_code !== null && job.exit_code !== undefined && (
          <> · exit code {job.exit_code}</>
        )}
      </div>
      {job.reason &&
        (job.status === 'failed' || job.status === 'cancelled') && (
          <div className="jp-CloudPromote-failure" role="alert">
            {job.reason}
          </div>
        )}
      <div className="jp-CloudPromote-actions">
        <button
          className="jp-Button jp-mod-styled jp-mod-warn"
          disabled={terminal || busy || job.status === 'cancelling'}
          onClick={cancel}
          aria-label={`Cancel job ${job.id}`}
        >
          Cancel
        </button>
        <button
          className="jp-Button jp-mod-styled"
          disabled={!terminal || busy}
          onClick={rerun}
          aria-label={`Rerun job ${job.id}`}
        >
          Rerun
        </button>
        <button
          className="jp-Button jp-mod-styled"
          disabled={!terminal || busy}
          onClick={remove}
          aria-label={`Delete job ${job.id}`}
        >
          Delete
        </button>
      </div>
      <div
        ref={tabListRef}
        className="jp-CloudPromote-tabs"
        role="tablist"
        aria-label="Job details"
        aria-orientation="horizontal"
        onKeyDown={onTabKey}
      >
        {tabs.map(item => (
          <button
            key={item.id}
            type="button"
            role="tab"
            id={`cloudpromote-tab-${item.id}`}
            aria-selected={tab === item.id}
            aria-controls={`cloudpromote-tabpanel-${item.id}`}
            tabIndex={tab === item.id ? 0 : -1}
            className={`jp-CloudPromote-tab${tab === item.id ? ' jp-mod-active' : ''}`}
            onClick={() => setTab(item.id)}
          >
            {item.label}
          </button>
        ))}
      </div>
      {/* One panel per tab so every aria-controls resolves; only the selected one is
          shown and rendered (the others would fetch logs and files for nothing). */}
      {tabs.map(item => (
        <div
          key={item.id}
          role="tabpanel"
          id={`cloudpromote-tabpanel-${item.id}`}
          aria-labelledby={`cloudpromote-tab-${item.id}`}
          className="jp-CloudPromote-tabPanel"
          hidden={tab !== item.id}
        >
          {tab === item.id && item.id === 'logs' && (
            <LogsView job={job} client={client} follow={props.followLogs} />
          )}
          {tab === item.id && item.id === 'outputs' && (
            <OutputsView
              job={job}
              client={client}
              openOutput={props.openOutput}
            />
          )}
          {tab === item.id && item.id === 'files' && (
            <FilesView job={job} client={client} openText={props.openText} />
          )}
          {tab === item.id && item.id === 'history' && (
            <HistoryView job={job} />
          )}
        </div>
      ))}
    </section>
  );
}

/** Log text of one phase, read by range and extended while the job is active. */
function LogsView(props: {
  job: Job;
  client: CloudPromoteClient;
  follow: () => boolean;
}): JSX.Element {
  const { job, client } = props;
  const [phase, setPhase] = useState<LogPhase>(
    job.status === 'pending' || job.status === 'building' ? 'build' : 'run'
  );
  const [text, setText] = useState('');
  const [error, setError] = useState('');
  const preRef = useRef<HTMLPreElement>(null);
  const terminal = isTerminal(job.status);

  useEffect(() => {
    let offset = 0;
    let stopped = false;
    let timer = 0;
    setText('');
    setError('');
    const read = async (): Promise<void> => {
      try {
        // Read until the server has nothing more; then wait and read again.
        for (;;) {
          const chunk = await client.logs(job.id, phase, offset);
          if (stopped || !chunk.text) {
            break;
          }
          offset = chunk.offset;
          setText(previous => previous + chunk.text);
        }
      } catch (err) {
        if (!stopped) {
          setError(String((err as Error).message ?? err));
        }
      }
      if (!stopped && !terminal) {
        timer = window.setTimeout(read, 1000);
      }
    };
    void read();
    return () => {
      stopped = true;
      window.clearTimeout(timer);
    };
  }, [job.id, phase, terminal]);

  useEffect(() => {
    if (props.follow() && preRef.current) {
      preRef.current.scrollTop = preRef.current.scrollHeight;
    }
  }, [text]);

  return (
    <div className="jp-CloudPromote-logs">
      <div
        className="jp-CloudPromote-phases"
        role="radiogroup"
        aria-label="Log phase"
      >
        {(['build', 'run'] as LogPhase[]).map(item => (
          <label key={item}>
            <input
              type="radio"
              name={`cloudpromote-phase-${job.id}`}
              checked={phase === item}
              onChange={() => setPhase(item)}
            />
            {item === 'build' ? 'Build' : 'Run'}
          </label>
        ))}
      </div>
      {error && (
        <div className="jp-CloudPromote-error" role="alert">
          {error}
        </div>
      )}
      <pre
        ref={preRef}
        className="jp-CloudPromote-logText"
        aria-label={`${phase} log of job ${job.id}`}
        tabIndex={0}
      >
        {text || (terminal ? '(no log lines)' : 'Waiting for log lines…')}
      </pre>
    </div>
  );
}

function OutputsView(props: {
  job: Job;
  client: CloudPromoteClient;
  openOutput: (job: Job, path: string) => Promise<void>;
}): JSX.Element {
  const { job, client } = props;
  const [files, setFiles] = useState<OutputFile[] | null>(null);
  const [error, setError] = useState('');
  useEffect(() => {
    client
      .outputs(job.id)
      .then(setFiles)
      .catch(err => setError(String((err as Error).message ?? err)));
  }, [job.id, job.status]);

  if (error) {
    return (
      <div className="jp-CloudPromote-error" role="alert">
        {error}
      </div>
    );
  }
  if (files === null) {
    return <p>Loading outputs…</p>;
  }
  if (files.length === 0) {
    return <p>No outputs{isTerminal(job.status) ? '' : ' yet'}.</p>;
  }
  const base = PageConfig.getBaseUrl();
  return (
    <ul className="jp-CloudPromote-outputs" aria-label="Output files">
      {files.map(file => {
        const url = URLExt.join(
          base,
          CloudPromoteClient.outputRoute(job.id, file.path)
        );
        return (
          <li key={file.path}>
            <span className="jp-CloudPromote-outputName">{file.path}</span>
            {file.size !== undefined && (
              <span className="jp-CloudPromote-outputSize">{file.size} B</span>
            )}
            <button
              className="jp-Button jp-mod-styled jp-mod-minimal"
              aria-label={`Open ${file.path} in JupyterLab`}
              onClick={() => void props.openOutput(job, file.path)}
            >
              Open
            </button>
            <a href={url} download aria-label={`Download ${file.path}`}>
              Download
            </a>
          </li>
        );
      })}
    </ul>
  );
}

/** The promoted script, requirements and Dockerfile of the job's build context. */
function FilesView(props: {
  job: Job;
  client: CloudPromoteClient;
  openText: (title: string, text: string) => void;
}): JSX.Element {
  const { job, client } = props;
  const [artifacts, setArtifacts] = useState<Artifact[] | null>(null);
  const [error, setError] = useState('');
  useEffect(() => {
    client
      .getJob(job.id)
      .then(detail => setArtifacts(detail.artifacts ?? []))
      .catch(err => setError(String((err as Error).message ?? err)));
  }, [job.id, job.status]);
  if (error) {
    return (
      <div className="jp-CloudPromote-error" role="alert">
        {error}
      </div>
    );
  }
  if (artifacts === null) {
    return <p>Loading…</p>;
  }
  if (artifacts.length === 0) {
    return (
      <p>
        The job&apos;s build context is not available
        {isTerminal(job.status) ? '' : ' yet'}.
      </p>
    );
  }
  return (
    <ul className="jp-CloudPromote-outputs" aria-label="Promoted files">
      {artifacts.map(item => (
        <li key={item.name}>
          <span className="jp-CloudPromote-outputName">{item.file}</span>
          <button
            className="jp-Button jp-mod-styled jp-mod-minimal"
            aria-label={`Open the ${item.name} of job ${job.id}`}
            onClick={() =>
              props.openText(
                `${item.file} (job ${job.id})`,
                item.truncated ? `${item.text}\n… (truncated)` : item.text
              )
            }
          >
            Open
          </button>
        </li>
      ))}
    </ul>
  );
}

function HistoryView(props: { job: Job }): JSX.Element {
  const history = props.job.history ?? [];
  if (!history.length) {
    return <p>No recorded transitions.</p>;
  }
  return (
    <ol className="jp-CloudPromote-history">
      {history.map((item, index) => (
        <li key={index}>
          <StatusBadge status={item.state} />{' '}
          <span>{formatTime(item.time)}</span>
          {item.reason && (
            <span className="jp-CloudPromote-historyReason">
              {' '}
              — {item.reason}
            </span>
          )}
        </li>
      ))}
    </ol>
  );
}
