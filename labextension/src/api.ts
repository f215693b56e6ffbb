/**
 * Typed client for the server extension's REST API under `/cloudpromote/`.
 *
 * The client takes a `RequestFn` rather than calling `fetch` itself, so the plugin can
 * pass JupyterLab's authenticated `ServerConnection.makeRequest` (token, XSRF, base URL)
 * and the unit tests can pass a recording fake. It has no runtime JupyterLab imports.
 */

export type JobStatus =
  | 'pending'
  | 'building'
  | 'queued'
  | 'running'
  | 'cancelling'
  | 'succeeded'
  | 'failed'
  | 'cancelled';

export const JOB_STATUSES: readonly JobStatus[] = [
  'pending',
  'building',
  'queued',
  'running',
  'cancelling',
  'succeeded',
  'failed',
  'cancelled'
];

export const TERMINAL_STATUSES: ReadonlySet<JobStatus> = new Set<JobStatus>([
  'succeeded',
  'failed',
  'cancelled'
]);

export function isTerminal(status: JobStatus): boolean {
  return TERMINAL_STATUSES.has(status);
}

export interface Transition {
  time: number;
  state: JobStatus;
  reason: string;
}

/** A job as `JobRecord.to_dict()` serialises it. Times are Unix seconds. */
export interface Job {
  id: string;
  notebook: string;
  backend: string;
  backend_kind: string;
  status: JobStatus;
  created: number;
  updated: number;
  reason: string;
  exit_code: number | null;
  job_dir?: string;
  backend_id?: string | null;
  image?: string | null;
  content_hash?: string | null;
  spec?: Record<string, unknown>;
  history?: Transition[];
}

export type Severity = 'error' | 'warning' | 'info';

export const SEVERITY_RANK: Record<Severity, number> = {
  error: 2,
  warning: 1,
  info: 0
};

export interface Finding {
  severity: Severity;
  code: string;
  message: string;
  fix: string;
  cell: number | null;
  line: number | null;
  path: string | null;
}

export interface Parameter {
  name: string;
  default: unknown;
  default_source: string;
  type: string;
}

export interface RequirementDetail {
  requirement: string;
  name?: string;
  specifier?: string;
  source: string;
  imports?: string[];
  optional?: boolean;
}

export interface Preview {
  script: string;
  requirements: string[];
  requirement_details: RequirementDetail[];
  dockerfile: string;
  findings: Finding[];
  parameters: Parameter[];
  local_modules?: string[];
  python_version?: string;
  base_image?: string;
}

/** A backend profile the user can pick, with its kind's availability. */
export interface Backend {
  name: string;
  kind: string;
  available: boolean;
  configured: boolean;
  default: boolean;
  message: string;
  features: string[];
  install_hint: string;
  description: string;
}

/** What `GET backends` answers. */
export interface BackendsReply {
  default: string | null;
  profiles: { name: string; kind: string; configured: boolean }[];
  backends: {
    kind: string;
    available: boolean;
    message?: string;
    description?: string;
    features?: string[];
    install_hint?: string;
  }[];
}

/** A file of the job's build context (script, requirements, Dockerfile) as `GET jobs/{id}` lists it. */
export interface Artifact {
  name: string;
  file: string;
  size: number;
  truncated: boolean;
  text: string;
}

export interface JobDetail extends Job {
  artifacts?: Artifact[];
  outputs?: OutputFile[];
}

export interface Resources {
  cpus?: number | null;
  memory?: string | null;
  gpus?: number;
  time_limit?: string | null;
}

export interface PreviewRequest {
  path: string;
  backend?: string;
  parameters?: Record<string, unknown>;
  options?: Record<string, string>;
  /** Requirement lines to use exactly, instead of the resolved ones. */
  requirements?: string[];
}

export interface SubmitRequest {
  path: string;
  backend?: string;
  parameters?: Record<string, unknown>;
  resources?: Resources;
  include?: string[];
  env?: Record<string, string>;
  options?: Record<string, string>;
  force?: boolean;
  /** Requirement lines to use exactly, instead of the resolved ones. */
  requirements?: string[];
}

export interface JobQuery {
  limit?: number;
  offset?: number;
  status?: string;
  backend?: string;
  notebook?: string;
  sort?: string;
}

export interface JobPage {
  jobs: Job[];
  total: number;
}

export type LogPhase = 'build' | 'run';

export interface LogChunk {
  /** The text from the requested offset. */
  text: string;
  /** Where the next read should start. */
  offset: number;
}

export interface OutputFile {
  path: string;
  size?: number;
}

/**
 * A job event from the `events` stream (server-sent events): `type` is job-created,
 * job-updated or job-deleted; `id` is the event's sequence number; `job` the job (only
 * `{id}` for a deletion).
 */
export interface JobEvent {
  type: string;
  id?: number;
  job: Partial<Job> & { id: string };
}

export const JOB_EVENT_TYPES = [
  'job-created',
  'job-updated',
  'job-deleted'
] as const;

/** An error answer from the server, with the server's message and suggested fix. */
export class ApiError extends Error {
  readonly status: number;
  readonly fix: string;

  constructor(status: number, message: string, fix = '') {
    super(message);
    this.name = 'ApiError';
    this.status = status;
    this.fix = fix;
  }
}

export type RequestFn = (path: string, init: RequestInit) => Promise<Response>;

export const API_BASE = 'cloudpromote';

function queryString(
  params: Record<string, string | number | undefined>
): string {
  const parts: string[] = [];
  for (const [key, value] of Object.entries(params)) {
    if (value === undefined || value === '') {
      continue;
    }
    parts.push(
      `${encodeURIComponent(key)}=${encodeURIComponent(String(value))}`
    );
  }
  return parts.length ? `?${parts.join('&')}` : '';
}

/** Encode a notebook-relative output path segment by segment (keep the slashes). */
export function encodePath(path: string): string {
  return path.split('/').map(encodeURIComponent).join('/');
}

export class CloudPromoteClient {
  constructor(private readonly request: RequestFn) {}

  /** Path of an API route relative to the server's base URL. */
  static route(...parts: string[]): string {
    return [API_BASE, ...parts].join('/');
  }

  /** Profiles (configured ones and one per known kind), each with its kind's availability. */
  async backends(): Promise<Backend[]> {
    const data = await this.call<BackendsReply>('GET', 'backends');
    const kinds = new Map(data.backends.map(item => [item.kind, item]));
    return data.profiles.map(profile => {
      const kind = kinds.get(profile.kind);
      return {
        name: profile.name,
        kind: profile.kind,
        configured: profile.configured,
        default: profile.name === data.default,
        available: kind?.available ?? false,
        message: kind?.message ?? '',
        features: kind?.features ?? [],
        install_hint: kind?.install_hint ?? '',
        description: kind?.description ?? ''
      };
    });
  }

  async preview(body: PreviewRequest): Promise<Preview> {
    return this.call<Preview>('POST', 'preview', body);
  }

  async submit(body: SubmitRequest): Promise<Job> {
    return this.call<Job>('POST', 'jobs', body);
  }

  async listJobs(query: JobQuery = {}): Promise<JobPage> {
    const data = await this.call<JobPage | Job[]>(
      'GET',
      `jobs${queryString({ ...query })}`
    );
    return Array.isArray(data) ? { jobs: data, total: data.length } : data;
  }

  async getJob(id: string): Promise<JobDetail> {
    return this.call<JobDetail>('GET', `jobs/${encodeURIComponent(id)}`);
  }

  async logs(id: string, phase: LogPhase, offset = 0): Promise<LogChunk> {
    const data = await this.call<Partial<LogChunk> & { next_offset?: number }>(
      'GET',
      `jobs/${encodeURIComponent(id)}/logs${queryString({ phase, offset })}`
    );
    const text = data.text ?? '';
    const next = data.next_offset ?? data.offset ?? offset + text.length;
    return { text, offset: next };
  }

  async cancel(id: string): Promise<Job> {
    return this.call<Job>('POST', `jobs/${encodeURIComponent(id)}/cancel`, {});
  }

  async rerun(id: string): Promise<Job> {
    return this.call<Job>('POST', `jobs/${encodeURIComponent(id)}/rerun`, {});
  }

  async remove(id: string): Promise<void> {
    await this.call<unknown>('DELETE', `jobs/${encodeURIComponent(id)}`);
  }

  async outputs(id: string): Promise<OutputFile[]> {
    const data = await this.call<{ outputs: OutputFile[] } | OutputFile[]>(
      'GET',
      `jobs/${encodeURIComponent(id)}/outputs`
    );
    return Array.isArray(data) ? data : data.outputs;
  }

  /** The bytes of one output file (the server always sends it as a download). */
  async outputFile(id: string, path: string): Promise<Blob> {
    const route = `jobs/${encodeURIComponent(id)}/outputs/${encodePath(path)}`;
    let response: Response;
    try {
      response = await this.request(CloudPromoteClient.route(route), {
        method: 'GET',
        cache: 'no-cache'
      });
    } catch (error) {
      throw new ApiError(
        0,
        `Cannot reach the Jupyter server: ${String(error)}`
      );
    }
    if (!response.ok) {
      const text = await response.text();
      let data: unknown = undefined;
      try {
        data = JSON.parse(text);
      } catch {
        data = undefined;
      }
      throw errorFrom(response.status, data, text);
    }
    return response.blob();
  }

  /** Route of one output file, for links (download) and for opening in a new tab. */
  static outputRoute(id: string, path: string): string {
    return CloudPromoteClient.route(
      'jobs',
      encodeURIComponent(id),
      'outputs',
      encodePath(path)
    );
  }

  private async call<T>(
    method: string,
    route: string,
    body?: unknown
  ): Promise<T> {
    // Not 'no-store' (the default): then JupyterLab's makeRequest appends a cache-busting query
    // argument to GETs, which the server's strict query validation refuses; 'no-cache' revalidates.
    const init: RequestInit = { method, cache: 'no-cache' };
    if (body !== undefined) {
      init.body = JSON.stringify(body);
      init.headers = { 'Content-Type': 'application/json' };
    }
    let response: Response;
    try {
      response = await this.request(CloudPromoteClient.route(route), init);
    } catch (error) {
      throw new ApiError(
        0,
        `Cannot reach the Jupyter server: ${String(error)}`
      );
    }
    const text = await response.text();
    let data: unknown = undefined;
    if (text) {
      try {
        data = JSON.parse(text);
      } catch {
        data = undefined;
      }
    }
    if (!response.ok) {
      throw errorFrom(response.status, data, text);
    }
    return data as T;
  }
}

function errorFrom(status: number, data: unknown, text: string): ApiError {
  if (data && typeof data === 'object') {
    const record = data as Record<string, unknown>;
    const message =
      (typeof record.message === 'string' && record.message) ||
      (typeof record.error === 'string' && record.error) ||
      (typeof record.reason === 'string' && record.reason) ||
      `Request failed with status ${status}`;
    const fix = typeof record.fix === 'string' ? record.fix : '';
    return new ApiError(status, message, fix);
  }
  return new ApiError(
    status,
    text.trim() || `Request failed with status ${status}`
  );
}
