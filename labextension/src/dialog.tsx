/**
 * The guided promotion dialog: readiness findings, requirements, configuration, review.
 * Its body does the preview and the submit itself, so a refused submit (400 with a fix)
 * is shown in place and the user can correct it without losing what they typed.
 */
import { Dialog, ReactWidget } from '@jupyterlab/apputils';
import React, { useEffect, useState } from 'react';

import {
  ApiError,
  Backend,
  CloudPromoteClient,
  Finding,
  Job,
  Parameter,
  Preview,
  Resources,
  Severity,
  SEVERITY_RANK,
  SubmitRequest
} from './api';

export interface IPromoteOptions {
  client: CloudPromoteClient;
  /** Notebook path relative to the server root. */
  path: string;
  defaultBackend: string;
  minimumSeverity: Severity;
  defaultResources: Resources;
  /** Scroll the notebook to a cell (index among all cells). */
  showCell: (cell: number) => void;
}

type Step = 0 | 1 | 2 | 3;
const STEP_TITLES = ['Readiness', 'Requirements', 'Configure', 'Review'];

/** Build the request from what the user entered (exported for reuse and tests). */
export function parseParameterValue(
  param: Parameter,
  raw: string | boolean
): unknown {
  if (typeof raw === 'boolean') {
    return raw;
  }
  switch (param.type) {
    case 'int': {
      const value = Number(raw);
      if (!Number.isInteger(value)) {
        throw new Error(`Parameter ${param.name} must be a whole number.`);
      }
      return value;
    }
    case 'float': {
      const value = Number(raw);
      if (raw.trim() === '' || Number.isNaN(value)) {
        throw new Error(`Parameter ${param.name} must be a number.`);
      }
      return value;
    }
    case 'str':
      return raw;
    default:
      // Lists, dicts and untyped values travel as the Python literal the user typed.
      return raw;
  }
}

function initialValue(param: Parameter): string | boolean {
  if (param.type === 'bool') {
    return Boolean(param.default);
  }
  if (param.type === 'str' && typeof param.default === 'string') {
    return param.default;
  }
  return param.default_source;
}

class PromoteBody extends ReactWidget {
  constructor(private readonly options: IPromoteOptions) {
    super();
    this.addClass('jp-CloudPromote-dialog');
  }

  dialog: Dialog<Job | null> | null = null;
  job: Job | null = null;

  getValue(): Job | null {
    return this.job;
  }

  render(): JSX.Element {
    return (
      <PromoteWizard
        {...this.options}
        onSubmitted={job => {
          this.job = job;
          this.dialog?.resolve(0);
        }}
      />
    );
  }
}

/**
 * JupyterLab's dialog resolves with its default button when Enter is pressed in any input;
 * inside the wizard Enter must not close the dialog and lose what the user typed.
 */
class PromoteDialog extends Dialog<Job | null> {
  constructor(
    options: Partial<Dialog.IOptions<Job | null>>,
    private readonly wizard: PromoteBody
  ) {
    super(options);
  }

  handleEvent(event: Event): void {
    if (
      event.type === 'keydown' &&
      (event as KeyboardEvent).key === 'Enter' &&
      event.target instanceof Node &&
      this.wizard.node.contains(event.target)
    ) {
      return;
    }
    super.handleEvent(event);
  }
}

/** Open the dialog; resolves with the created job, or null when the user cancelled. */
export async function promoteNotebook(
  options: IPromoteOptions
): Promise<Job | null> {
  const body = new PromoteBody(options);
  const dialog = new PromoteDialog(
    {
      title: `Promote ${options.path.split('/').pop()} to a job`,
      body,
      buttons: [Dialog.cancelButton({ label: 'Close' })]
    },
    body
  );
  dialog.addClass('jp-CloudPromote-dialogHost');
  body.dialog = dialog;
  const result = await dialog.launch();
  return result.value ?? body.job;
}

function PromoteWizard(
  props: IPromoteOptions & { onSubmitted: (job: Job) => void }
): JSX.Element {
  const { client } = props;
  const [step, setStep] = useState<Step>(0);
  const [preview, setPreview] = useState<Preview | null>(null);
  const [backends, setBackends] = useState<Backend[]>([]);
  const [loadError, setLoadError] = useState<ApiError | Error | null>(null);
  const [backend, setBackend] = useState(props.defaultBackend);
  const [resources, setResources] = useState<Resources>({
    ...props.defaultResources
  });
  const [values, setValues] = useState<Record<string, string | boolean>>({});
  const [include, setInclude] = useState('');
  const [force, setForce] = useState(false);
  const [submitError, setSubmitError] = useState<ApiError | Error | null>(null);
  const [submitting, setSubmitting] = useState(false);

  useEffect(() => {
    let cancelled = false;
    Promise.all([client.preview({ path: props.path }), client.backends()])
      .then(([previewData, backendList]) => {
        if (cancelled) {
          return;
        }
        setPreview(previewData);
        setBackends(backendList);
        const initial: Record<string, string | boolean> = {};
        for (const param of previewData.parameters) {
          initial[param.name] = initialValue(param);
        }
        setValues(initial);
        const names = backendList.map(item => item.name);
        if (!backend || !names.includes(backend)) {
          const preferred =
            backendList.find(item => item.default && item.available) ??
            backendList.find(item => item.name === 'local' && item.available) ??
            backendList.find(item => item.available);
          setBackend(preferred?.name ?? '');
        }
      })
      .catch(error => !cancelled && setLoadError(error));
    return () => {
      cancelled = true;
    };
  }, [props.path]);

  if (loadError) {
    return (
      <div className="jp-CloudPromote-error" role="alert">
        <p>Could not prepare the promotion: {loadError.message}</p>
        {loadError instanceof ApiError && loadError.fix && (
          <p>Fix: {loadError.fix}</p>
        )}
      </div>
    );
  }
  if (!preview) {
    return (
      <div className="jp-CloudPromote-loading" role="status">
        Checking the notebook and resolving its requirements…
      </div>
    );
  }

  const minimum = SEVERITY_RANK[props.minimumSeverity] ?? 0;
  const shownFindings = preview.findings.filter(
    finding => (SEVERITY_RANK[finding.severity] ?? 0) >= minimum
  );
  const errors = preview.findings.filter(
    finding => finding.severity === 'error'
  );
  const selectedBackend = backends.find(item => item.name === backend);

  const buildRequest = (): SubmitRequest => {
    const parameters: Record<string, unknown> = {};
    for (const param of preview.parameters) {
      const raw = values[param.name];
      if (raw === undefined || raw === initialValue(param)) {
        continue; // unchanged: the notebook's own default applies
      }
      parameters[param.name] = parseParameterValue(param, raw);
    }
    const cleanResources: Resources = {};
    if (resources.cpus) {
      cleanResources.cpus = Number(resources.cpus);
    }
    if (resources.memory) {
      cleanResources.memory = resources.memory;
    }
    if (resources.gpus) {
      cleanResources.gpus = Number(resources.gpus);
    }
    if (resources.time_limit) {
      cleanResources.time_limit = resources.time_limit;
    }
    const request: SubmitRequest = { path: props.path };
    if (backend) {
      request.backend = backend;
    }
    if (Object.keys(parameters).length) {
      request.parameters = parameters;
    }
    if (Object.keys(cleanResources).length) {
      request.resources = cleanResources;
    }
    const files = include
      .split(/[\n,]/)
      .map(item => item.trim())
      .filter(Boolean);
    if (files.length) {
      request.include = files;
    }
    if (force) {
      request.force = true;
    }
    return request;
  };

  const submit = async () => {
    setSubmitError(null);
    setSubmitting(true);
    try {
      const job = await client.submit(buildRequest());
      props.onSubmitted(job);
    } catch (error) {
      setSubmitError(error as Error);
    } finally {
      setSubmitting(false);
    }
  };

  return (
    <div className="jp-CloudPromote-wizard">
      <ol className="jp-CloudPromote-steps" aria-label="Promotion steps">
        {STEP_TITLES.map((title, index) => (
          <li key={title} aria-current={index === step ? 'step' : undefined}>
            <button
              className={`jp-CloudPromote-stepButton${index === step ? ' jp-mod-active' : ''}`}
              onClick={() => setStep(index as Step)}
            >
              {index + 1}. {title}
            </button>
          </li>
        ))}
      </ol>
      <div className="jp-CloudPromote-stepBody">
        {step === 0 && (
          <FindingsStep
            findings={shownFindings}
            hidden={preview.findings.length - shownFindings.length}
            showCell={props.showCell}
          />
        )}
        {step === 1 && <RequirementsStep preview={preview} />}
        {step === 2 && (
          <section aria-labelledby="cloudpromote-configure">
            <h3 id="cloudpromote-configure">Backend and resources</h3>
            <label className="jp-CloudPromote-field">
              <span>Backend</span>
              <select
                className="jp-mod-styled"
                aria-label="Backend profile"
                value={backend}
                onChange={event => setBackend(event.target.value)}
              >
                {backends.map(item => (
                  <option
                    key={item.name}
                    value={item.name}
                    disabled={!item.available}
                  >
                    {item.name} ({item.kind})
                    {item.available ? '' : ' — unavailable'}
                  </option>
                ))}
              </select>
            </label>
            {selectedBackend &&
              !selectedBackend.available &&
              selectedBackend.install_hint && (
                <p className="jp-CloudPromote-hint">
                  {selectedBackend.install_hint}
                </p>
              )}
            <div className="jp-CloudPromote-resources">
              <label className="jp-CloudPromote-field">
                <span>CPUs</span>
                <input
                  className="jp-mod-styled"
                  type="number"
                  min={0}
                  step="any"
                  value={resources.cpus ?? ''}
                  onChange={event =>
                    setResources({
                      ...resources,
                      cpus:
                        event.target.value === ''
                          ? null
                          : Number(event.target.value)
                    })
                  }
                />
              </label>
              <label className="jp-CloudPromote-field">
                <span>Memory</span>
                <input
                  className="jp-mod-styled"
                  placeholder="e.g. 4G"
                  value={resources.memory ?? ''}
                  onChange={event =>
                    setResources({ ...resources, memory: event.target.value })
                  }
                />
              </label>
              <label className="jp-CloudPromote-field">
                <span>GPUs</span>
                <input
                  className="jp-mod-styled"
                  type="number"
                  min={0}
                  step={1}
                  value={resources.gpus ?? 0}
                  onChange={event =>
                    setResources({
                      ...resources,
                      gpus: Number(event.target.value) || 0
                    })
                  }
                />
              </label>
              <label className="jp-CloudPromote-field">
                <span>Time limit</span>
                <input
                  className="jp-mod-styled"
                  placeholder="e.g. 2h"
                  value={resources.time_limit ?? ''}
                  onChange={event =>
                    setResources({
                      ...resources,
                      time_limit: event.target.value
                    })
                  }
                />
              </label>
            </div>
            <h3>Parameters</h3>
            {preview.parameters.length === 0 ? (
              <p>
                No <code>parameters</code> cell: tag a cell{' '}
                <code>parameters</code> to make its variables adjustable per
                job.
              </p>
            ) : (
              preview.parameters.map(param => (
                <ParameterInput
                  key={param.name}
                  param={param}
                  value={values[param.name] ?? initialValue(param)}
                  onChange={value =>
                    setValues({ ...values, [param.name]: value })
                  }
                />
              ))
            )}
            <h3>Files to include</h3>
            <label className="jp-CloudPromote-field">
              <span>
                Extra files or folders, relative to the notebook (one per line)
              </span>
              <textarea
                className="jp-mod-styled"
                rows={2}
                value={include}
                onChange={event => setInclude(event.target.value)}
              />
            </label>
          </section>
        )}
        {step === 3 && (
          <section aria-labelledby="cloudpromote-review">
            <h3 id="cloudpromote-review">Review</h3>
            <p>
              Run <code>{props.path}</code> on{' '}
              <strong>{backend || 'the default backend'}</strong> with{' '}
              {preview.requirements.length} requirement(s)
              {preview.python_version
                ? ` on Python ${preview.python_version}`
                : ''}
              .
            </p>
            <details open>
              <summary>Script</summary>
              <pre
                className="jp-CloudPromote-code"
                aria-label="Promoted script"
                tabIndex={0}
              >
                {preview.script}
              </pre>
            </details>
            <details>
              <summary>Dockerfile</summary>
              <pre
                className="jp-CloudPromote-code"
                aria-label="Dockerfile"
                tabIndex={0}
              >
                {preview.dockerfile}
              </pre>
            </details>
            {errors.length > 0 && (
              <label className="jp-CloudPromote-force">
                <input
                  type="checkbox"
                  checked={force}
                  onChange={event => setForce(event.target.checked)}
                />
                Submit despite {errors.length} error finding(s)
              </label>
            )}
          </section>
        )}
      </div>
      {submitError && (
        <div className="jp-CloudPromote-error" role="alert">
          <p>{submitError.message}</p>
          {submitError instanceof ApiError && submitError.fix && (
            <p>Fix: {submitError.fix}</p>
          )}
        </div>
      )}
      <div className="jp-CloudPromote-nav">
        <button
          className="jp-Button jp-mod-styled jp-mod-reject"
          disabled={step === 0}
          onClick={() => setStep((step - 1) as Step)}
        >
          Back
        </button>
        {step < 3 ? (
          <button
            className="jp-Button jp-mod-styled jp-mod-accept"
            onClick={() => setStep((step + 1) as Step)}
          >
            Next
          </button>
        ) : (
          <button
            className="jp-Button jp-mod-styled jp-mod-accept jp-CloudPromote-submit"
            disabled={submitting || !backend || (errors.length > 0 && !force)}
            onClick={() => void submit()}
          >
            {submitting ? 'Submitting…' : 'Submit'}
          </button>
        )}
      </div>
    </div>
  );
}

function FindingsStep(props: {
  findings: Finding[];
  hidden: number;
  showCell: (cell: number) => void;
}): JSX.Element {
  const order: Severity[] = ['error', 'warning', 'info'];
  return (
    <section aria-labelledby="cloudpromote-findings">
      <h3 id="cloudpromote-findings">Readiness findings</h3>
      {props.findings.length === 0 ? (
        <p className="jp-CloudPromote-ready">
          No findings: the notebook looks ready to run unattended.
        </p>
      ) : (
        order.map(severity => {
          const group = props.findings.filter(
            finding => finding.severity === severity
          );
          if (!group.length) {
            return null;
          }
          return (
            <div key={severity} className="jp-CloudPromote-findingGroup">
              <h4>
                {severity} ({group.length})
              </h4>
              <ul className="jp-CloudPromote-findings">
                {group.map((finding, index) => (
                  <li
                    key={`${finding.code}-${index}`}
                    className={`jp-CloudPromote-finding jp-CloudPromote-severity-${finding.severity}`}
                    data-code={finding.code}
                  >
                    <div>
                      <span className="jp-CloudPromote-findingCode">
                        {finding.code}
                      </span>{' '}
                      {finding.message}
                    </div>
                    {finding.fix && (
                      <div className="jp-CloudPromote-fix">
                        Fix: {finding.fix}
                      </div>
                    )}
                    {finding.cell !== null && finding.cell !== undefined && (
                      <button
                        className="jp-Button jp-mod-styled jp-mod-minimal jp-CloudPromote-cellLink"
                        onClick={() => props.showCell(finding.cell as number)}
                        aria-label={`Show cell ${finding.cell + 1} in the notebook`}
                      >
                        cell {finding.cell + 1}
                        {finding.line ? `, line ${finding.line}` : ''}
                      </button>
                    )}
                  </li>
                ))}
              </ul>
            </div>
          );
        })
      )}
      {props.hidden > 0 && (
        <p className="jp-CloudPromote-hint">
          {props.hidden} finding(s) below the lowest severity shown (see
          Settings).
        </p>
      )}
    </section>
  );
}

function RequirementsStep(props: { preview: Preview }): JSX.Element {
  const { preview } = props;
  return (
    <section aria-labelledby="cloudpromote-requirements">
      <h3 id="cloudpromote-requirements">Requirements</h3>
      {preview.requirement_details.length === 0 ? (
        <p>No third-party requirements were detected.</p>
      ) : (
        <table className="jp-CloudPromote-requirements">
          <thead>
            <tr>
              <th scope="col">Requirement</th>
              <th scope="col">From</th>
            </tr>
          </thead>
          <tbody>
            {preview.requirement_details.map(item => (
              <tr key={item.requirement}>
                <td>
                  <code>{item.requirement}</code>
                  {item.optional ? ' (optional)' : ''}
                </td>
                <td>
                  {item.source}
                  {item.imports &&
                    item.imports.length > 0 &&
                    ` (import ${item.imports.join(', ')})`}
                </td>
              </tr>
            ))}
          </tbody>
        </table>
      )}
      {preview.local_modules && preview.local_modules.length > 0 && (
        <p>
          Local files packed with the job: {preview.local_modules.join(', ')}
        </p>
      )}
      <p className="jp-CloudPromote-hint">
        Versions are pinned to what the notebook&apos;s kernel has installed. To
        change one, edit a <code>requirements.txt</code> beside the notebook or
        a <code>%pip install</code> line, then reopen this dialog.
      </p>
    </section>
  );
}

function ParameterInput(props: {
  param: Parameter;
  value: string | boolean;
  onChange: (value: string | boolean) => void;
}): JSX.Element {
  const { param } = props;
  if (param.type === 'bool') {
    return (
      <label className="jp-CloudPromote-field jp-CloudPromote-param">
        <input
          type="checkbox"
          checked={Boolean(props.value)}
          onChange={event => props.onChange(event.target.checked)}
        />
        <span>
          {param.name} <small>(bool)</small>
        </span>
      </label>
    );
  }
  const numeric = param.type === 'int' || param.type === 'float';
  return (
    <label className="jp-CloudPromote-field jp-CloudPromote-param">
      <span>
        {param.name} <small>({param.type})</small>
      </span>
      <input
        className="jp-mod-styled"
        type={numeric ? 'number' : 'text'}
        step={param.type === 'int' ? 1 : 'any'}
        name={`param-${param.name}`}
        value={String(props.value)}
        onChange={event => props.onChange(event.target.value)}
      />
    </label>
  );
}
