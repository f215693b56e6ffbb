/**
 * Live job updates from the server's `events` stream (server-sent events). On every
 * (re)connection the model is refreshed once, so nothing missed while disconnected is
 * lost; if the stream cannot be opened at all, the model is refreshed on a timer instead.
 */
import { PageConfig, URLExt } from '@jupyterlab/coreutils';
import { IDisposable } from '@lumino/disposable';

import { CloudPromoteClient, JOB_EVENT_TYPES, JobEvent } from './api';
import { JobsModel } from './model';

export class JobEvents implements IDisposable {
  constructor(
    private readonly model: JobsModel,
    private readonly fallbackSeconds: () => number
  ) {
    this.connect();
  }

  get isDisposed(): boolean {
    return this._disposed;
  }

  /** True while the stream is open (the panel shows it; tests wait for it). */
  get connected(): boolean {
    return this._source?.readyState === EventSource.OPEN;
  }

  dispose(): void {
    if (this._disposed) {
      return;
    }
    this._disposed = true;
    this._source?.close();
    window.clearTimeout(this._timer);
  }

  private connect(): void {
    let url = URLExt.join(
      PageConfig.getBaseUrl(),
      CloudPromoteClient.route('events')
    );
    const token = PageConfig.getToken();
    if (token) {
      // EventSource cannot send headers; the token goes where jupyter_server accepts it.
      url += `?token=${encodeURIComponent(token)}`;
    }
    const source = new EventSource(url);
    this._source = source;
    source.addEventListener('open', () => {
      window.clearTimeout(this._timer);
      this.model
        .refresh()
        .catch(error => console.warn('cloudpromote: refresh failed', error));
    });
    for (const type of JOB_EVENT_TYPES) {
      source.addEventListener(type, message => {
        try {
          const event = JSON.parse(
            (message as MessageEvent<string>).data
          ) as JobEvent;
          this.model.applyEvent({ ...event, type });
        } catch (error) {
          console.warn('cloudpromote: bad event', error);
        }
      });
    }
    source.addEventListener('error', () => {
      // The browser reconnects by itself unless the stream was refused outright.
      if (source.readyState === EventSource.CLOSED && !this._disposed) {
        this.poll();
      }
    });
  }

  private poll(): void {
    this._timer = window.setTimeout(
      () => {
        this.model
          .refresh()
          .catch(error => console.warn('cloudpromote: refresh failed', error))
          .finally(() => {
            if (!this._disposed) {
              this.connect();
            }
          });
      },
      Math.max(2, this.fallbackSeconds()) * 1000
    );
  }

  private _source: EventSource | null = null;
  private _timer = 0;
  private _disposed = false;
}
