/**
 * The jobs model behind the panel: every known job by id, the filters, the selection,
 * and how server events and refreshes are merged in. No DOM, no JupyterLab runtime.
 */
import { ISignal, Signal } from '@lumino/signaling';

import {
  CloudPromoteClient,
  isTerminal,
  Job,
  JobEvent,
  JobStatus
} from './api';

export interface JobFilter {
  /** Only jobs in this status ('' for all). */
  status: JobStatus | '';
  /** Only jobs on this backend profile ('' for all). */
  backend: string;
  /** Case-insensitive substring of the notebook's file name. */
  search: string;
}

/** How many jobs the panel keeps in view; older ones are a page away. */
export const PAGE_SIZE = 200;

export class JobsModel {
  constructor(private readonly client?: CloudPromoteClient) {}

  get changed(): ISignal<this, void> {
    return this._changed;
  }

  get filter(): Readonly<JobFilter> {
    return this._filter;
  }

  set filter(value: Partial<JobFilter>) {
    this._filter = { ...this._filter, ...value };
    this._changed.emit();
  }

  get selectedId(): string | null {
    return this._selectedId;
  }

  set selectedId(id: string | null) {
    if (id === this._selectedId) {
      return;
    }
    this._selectedId = id;
    this._changed.emit();
  }

  get selected(): Job | null {
    return this._selectedId ? (this._jobs.get(this._selectedId) ?? null) : null;
  }

  get size(): number {
    return this._jobs.size;
  }

  get(id: string): Job | undefined {
    return this._jobs.get(id);
  }

  /** Backend profiles seen on any job, sorted, for the backend filter. */
  get backends(): string[] {
    return [
      ...new Set([...this._jobs.values()].map(job => job.backend))
    ].sort();
  }

  /** Jobs matching the filter, newest first. */
  get visibleJobs(): Job[] {
    const search = this._filter.search.trim().toLowerCase();
    return [...this._jobs.values()]
      .filter(
        job =>
          (!this._filter.status || job.status === this._filter.status) &&
          (!this._filter.backend || job.backend === this._filter.backend) &&
          (!search || notebookName(job).toLowerCase().includes(search))
      )
      .sort((a, b) => b.created - a.created || b.id.localeCompare(a.id));
  }

  /**
   * Insert or update one job. An update older than what the model holds is ignored, so
   * an event that overtook a slower refresh (or the reverse) never rolls a job back.
   * Returns whether anything changed.
   */
  upsert(job: Job, emit = true): boolean {
    const known = this._jobs.get(job.id);
    if (known && known.updated > job.updated) {
      return false;
    }
    if (known && known.updated === job.updated && known.status === job.status) {
      // Same version; keep the richer record (with history) if the new one lacks it.
      if (!job.history && known.history) {
        return false;
      }
    }
    this._jobs.set(job.id, job);
    if (emit) {
      this._changed.emit();
    }
    return true;
  }

  remove(id: string): void {
    if (!this._jobs.delete(id)) {
      return;
    }
    if (this._selectedId === id) {
      this._selectedId = null;
    }
    this._changed.emit();
  }

  /** Replace the set of jobs with a fresh listing (keeps newer versions already held). */
  replaceAll(jobs: Job[]): void {
    const incoming = new Map(jobs.map(job => [job.id, job]));
    for (const id of [...this._jobs.keys()]) {
      if (!incoming.has(id)) {
        this._jobs.delete(id);
      }
    }
    for (const job of jobs) {
      this.upsert(job, false);
    }
    if (this._selectedId && !this._jobs.has(this._selectedId)) {
      this._selectedId = null;
    }
    this._loaded = true;
    this._changed.emit();
  }

  get loaded(): boolean {
    return this._loaded;
  }

  /** Apply one event from the server's events stream. */
  applyEvent(event: JobEvent): void {
    if (!event.job?.id) {
      return;
    }
    if (event.type === 'job-deleted') {
      this.remove(event.job.id);
      return;
    }
    if (event.job.status && typeof event.job.updated === 'number') {
      this.upsert(event.job as Job);
    }
  }

  /** Load the newest page of jobs from the server. */
  async refresh(): Promise<void> {
    if (!this.client) {
      return;
    }
    const page = await this.client.listJobs({
      limit: PAGE_SIZE,
      sort: 'created-desc'
    });
    this.replaceAll(page.jobs);
  }

  /** Whether any job is still moving (the panel then updates its durations). */
  get hasActiveJobs(): boolean {
    return [...this._jobs.values()].some(job => !isTerminal(job.status));
  }

  private _jobs = new Map<string, Job>();
  private _filter: JobFilter = { status: '', backend: '', search: '' };
  private _selectedId: string | null = null;
  private _loaded = false;
  private _changed = new Signal<this, void>(this);
}

/** The notebook's file name, from its absolute path. */
export function notebookName(job: Pick<Job, 'notebook'>): string {
  const parts = job.notebook.split(/[\\/]/);
  return parts[parts.length - 1] || job.notebook;
}

/** Seconds from creation to the terminal transition, or to `now` while active. */
export function durationSeconds(job: Job, now: number): number {
  const end = isTerminal(job.status) ? job.updated : now;
  return Math.max(0, end - job.created);
}

export function formatDuration(seconds: number): string {
  const total = Math.round(seconds);
  if (total < 60) {
    return `${total}s`;
  }
  const minutes = Math.floor(total / 60);
  if (minutes < 60) {
    return `${minutes}m ${total % 60}s`;
  }
  const hours = Math.floor(minutes / 60);
  return `${hours}h ${minutes % 60}m`;
}

/** Why a job failed or was cancelled, for the one-line summary in the list. */
export function failureReason(job: Job): string {
  if (job.status !== 'failed' && job.status !== 'cancelled') {
    return '';
  }
  if (job.reason) {
    return job.reason;
  }
  const last = job.history?.[job.history.length - 1];
  if (last?.reason) {
    return last.reason;
  }
  return job.exit_code !== null && job.exit_code !== undefined
    ? `exit code ${job.exit_code}`
    : '';
}
