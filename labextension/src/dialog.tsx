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
import {
  addRow,
  editedRequirements,
  editRow,
  IRequirementRow,
  removeRow,
  rowsFromDetails,
  rowSource
} from './requirements';

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
  // The first preview: what was detected, before any edit of the requirements.
  const [detected, setDetected] = useState<Preview | null>(null);
  const [rows, setRows] = useState<IRequirementRow[]>([]);
  // The edited lines the shown preview was made with ('null': the detected ones).
  const [previewedWith, setPreviewedWith] = useState('null');
  const [requirementsError, setRequirementsError] = useState<
    ApiError | Error | null
  >(null);
  const [checking, setChecking] = useState(false);
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
        setDetected(previewData);
        setRows(rowsFromDetails(previewData.requirement_details));
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
  if (!preview || !detected) {
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
  const edited = editedRequirements(rows, detected.requirement_details);

  /**
   * Change step. Leaving the requirements step with edits not yet previewed asks the server
   * for a preview with them first: a line it refuses keeps the user on the step, with the
   * server's message, and the review then shows what will really be installed.
   */
  const goTo = async (target: Step) => {
    const key = JSON.stringify(edited ?? null);
    if (step === 1 && target !== 1 && key !== previewedWith) {
      setRequirementsError(null);
      setChecking(true);
      try {
        const next =
          edited === undefined
            ? detected
            : await client.preview({ path: props.path, requirements: edited });
        setPreview(next);
        setPreviewedWith(key);
      } catch (error) {
        setRequirementsError(error as Error);
        return;
      } finally {
        setChecking(false);
      }
    }
    setStep(target);
  };

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
    if (edited !== undefined) {
      request.requirements = edited;
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
              disabled={checking}
              onClick={() => void goTo(index as Step)}
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
        {step === 1 && (
          <RequirementsStep
            rows={rows}
            edited={edited !== undefined}
            localModules={detected.local_modules ?? []}
            checking={checking}
            error={requirementsError}
            onChange={next => {
              setRows(next);
              setRequirementsError(null);
            }}
            onReset={() => {
              setRows(rowsFromDetails(detected.requirement_details));
              setRequirementsError(null);
            }}
          />
        )}
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
              {preview.requirements.length}
              {edited !== undefined ? ' edited' : ''} requirement(s)
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
              <summary>Requirements</summary>
              <pre
                className="jp-CloudPromote-code"
                aria-label="Requirements to install"
                tabIndex={0}
              >
                {preview.requirements.join('\n') || '(none)'}
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
          disabled={step === 0 || checking}
          onClick={() => void goTo((step - 1) as Step)}
        >
          Back
        </button>
        {step < 3 ? (
          <button
            className="jp-Button jp-mod-styled jp-mod-accept"
            disabled={checking}
            onClick={() => void goTo((step + 1) as Step)}
          >
            {checking ? 'Checking…' : 'Next'}
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

function RequirementsStep(props: {
  rows: IRequirementRow[];
  edited: boolean;
  localModules: string[];
  checking: boolean;
  error: ApiError | Error | null;
  onChange: (rows: IRequirementRow[]) => void;
  onReset: () => void;
}): JSX.Element {
  const { rows } = props;
  return (
    <section aria-labelledby="cloudpromote-requirements">
      <h3 id="cloudpromote-requirements">Requirements</h3>
      <p className="jp-CloudPromote-hint">
        Detected from the notebook&apos;s imports (pinned to what its kernel has
        installed), <code>%pip install</code> lines and requirement files beside
        it. The job installs exactly this list: edit, add or remove lines (PEP
        508, e.g. <code>pandas==2.1.3</code>).
      </p>
      {rows.length === 0 ? (
        <p className="jp-CloudPromote-noRequirements">
          {props.edited
            ? 'No requirements: the job installs nothing beyond the base image.'
            : 'No third-party requirements were detected.'}
        </p>
      ) : (
        <table className="jp-CloudPromote-requirements">
          <thead>
            <tr>
              <th scope="col">Requirement</th>
              <th scope="col">From</th>
              <th scope="col">
                <span className="jp-CloudPromote-srOnly">Actions</span>
              </th>
            </tr>
          </thead>
          <tbody>
            {rows.map((row, index) => {
              const source = rowSource(row);
              return (
                <tr key={row.key} data-source={source.split(' ')[0]}>
                  <td>
                    <input
                      className="jp-mod-styled jp-CloudPromote-requirementInput"
                      aria-label={`Requirement ${index + 1}`}
                      name={`requirement-${index + 1}`}
                      value={row.text}
                      spellCheck={false}
                      autoFocus={row.origin === null && row.text === ''}
                      onChange={event =>
                        props.onChange(
                          editRow(rows, row.key, event.target.value)
                        )
                      }
                    />
                    {row.origin?.optional ? ' (optional)' : ''}
                  </td>
                  <td className="jp-CloudPromote-requirementSource">
                    {source}
                  </td>
                  <td>
                    <button
                      className="jp-Button jp-mod-styled jp-mod-minimal jp-CloudPromote-removeRequirement"
                      aria-label={`Remove requirement ${index + 1}${row.text.trim() ? ` (${row.text.trim()})` : ''}`}
                      title="Remove this requirement"
                      onClick={() => props.onChange(removeRow(rows, row.key))}
                    >
                      ✕
                    </button>
                  </td>
                </tr>
              );
            })}
          </tbody>
        </table>
      )}
      <div className="jp-CloudPromote-requirementActions">
        <button
          className="jp-Button jp-mod-styled"
          onClick={() => props.onChange(addRow(rows))}
        >
          Add requirement
        </button>
        <button
          className="jp-Button jp-mod-styled jp-mod-reject"
          disabled={!props.edited}
          onClick={props.onReset}
        >
          Reset to detected
        </button>
      </div>
      {props.localModules.length > 0 && (
        <p>Local files packed with the job: {props.localModules.join(', ')}</p>
      )}
      {props.checking && (
        <p className="jp-CloudPromote-hint" role="status">
          Checking the edited requirements…
        </p>
      )}
      {props.error && (
        <div className="jp-CloudPromote-error" role="alert">
          <p>{props.error.message}</p>
          {props.error instanceof ApiError && props.error.fix && (
            <p>Fix: {props.error.fix}</p>
          )}
        </div>
      )}
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
