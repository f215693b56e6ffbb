import { Job, JobStatus } from '../src/api';
import {
  durationSeconds,
  failureReason,
  formatDuration,
  JobsModel,
  notebookName
} from '../src/model';

function makeJob(id: string, overrides: Partial<Job> = {}): Job {
  return {
    id,
    notebook: `/home/u/${id}.ipynb`,
    backend: 'local',
    backend_kind: 'local',
    status: 'pending' as JobStatus,
    created: 100,
    updated: 100,
    reason: '',
    exit_code: null,
    ...overrides
  };
}

describe('JobsModel', () => {
  it('lists jobs newest first and filters by status, backend and name', () => {
    const model = new JobsModel();
    model.replaceAll([
      makeJob('old', { created: 1, status: 'succeeded' }),
      makeJob('new', { created: 3, backend: 'docker', status: 'failed' }),
      makeJob('mid', { created: 2, status: 'running' })
    ]);
    expect(model.visibleJobs.map(j => j.id)).toEqual(['new', 'mid', 'old']);
    model.filter = { status: 'failed' };
    expect(model.visibleJobs.map(j => j.id)).toEqual(['new']);
    model.filter = { status: '', backend: 'local' };
    expect(model.visibleJobs.map(j => j.id)).toEqual(['mid', 'old']);
    model.filter = { backend: '', search: 'OL' };
    expect(model.visibleJobs.map(j => j.id)).toEqual(['old']);
    expect(model.backends).toEqual(['docker', 'local']);
  });

  it('never rolls a job back to an older version', () => {
    const model = new JobsModel();
    model.upsert(makeJob('a', { status: 'running', updated: 20 }));
    expect(model.upsert(makeJob('a', { status: 'queued', updated: 10 }))).toBe(
      false
    );
    expect(model.get('a')?.status).toBe('running');
    expect(
      model.upsert(makeJob('a', { status: 'succeeded', updated: 30 }))
    ).toBe(true);
    expect(model.get('a')?.status).toBe('succeeded');
  });

  it('applies created, updated and deleted events and emits changes', () => {
    const model = new JobsModel();
    let emitted = 0;
    model.changed.connect(() => emitted++);
    model.applyEvent({ type: 'job-created', id: 1, job: makeJob('a') });
    model.selectedId = 'a';
    model.applyEvent({
      type: 'job-updated',
      id: 2,
      job: makeJob('a', {
        status: 'cancelled',
        updated: 200,
        reason: 'cancelled by user'
      })
    });
    expect(model.selected?.status).toBe('cancelled');
    model.applyEvent({ type: 'job-deleted', id: 3, job: { id: 'a' } });
    expect(model.size).toBe(0);
    expect(model.selectedId).toBeNull();
    expect(emitted).toBeGreaterThanOrEqual(4);
  });

  it('drops jobs missing from a refresh and clears a stale selection', () => {
    const model = new JobsModel();
    model.replaceAll([makeJob('a'), makeJob('b')]);
    model.selectedId = 'b';
    model.replaceAll([makeJob('a')]);
    expect(model.size).toBe(1);
    expect(model.selectedId).toBeNull();
    expect(model.loaded).toBe(true);
  });

  it('refreshes from the client, newest page first', async () => {
    const asked: unknown[] = [];
    const client = {
      listJobs: async (query: unknown) => {
        asked.push(query);
        return { jobs: [makeJob('x', { status: 'running' })], total: 1 };
      }
    };
    const model = new JobsModel(client as never);
    await model.refresh();
    expect(asked).toEqual([{ limit: 200, sort: 'created-desc' }]);
    expect(model.hasActiveJobs).toBe(true);
  });
});

describe('job formatting helpers', () => {
  it('names the notebook by its file name', () => {
    expect(notebookName({ notebook: '/a/b/report.ipynb' })).toBe(
      'report.ipynb'
    );
  });

  it('measures duration to the end for finished jobs and to now for active ones', () => {
    expect(
      durationSeconds(makeJob('a', { status: 'succeeded', updated: 190 }), 1000)
    ).toBe(90);
    expect(
      durationSeconds(makeJob('a', { status: 'running', updated: 150 }), 160)
    ).toBe(60);
    expect(formatDuration(5)).toBe('5s');
    expect(formatDuration(125)).toBe('2m 5s');
    expect(formatDuration(7380)).toBe('2h 3m');
  });

  it('gives a failure reason from the job, its history or its exit code', () => {
    expect(
      failureReason(makeJob('a', { status: 'succeeded', reason: 'done' }))
    ).toBe('');
    expect(
      failureReason(makeJob('a', { status: 'failed', reason: 'build failed' }))
    ).toBe('build failed');
    expect(
      failureReason(
        makeJob('a', {
          status: 'failed',
          history: [{ time: 1, state: 'failed', reason: 'exited with code 3' }]
        })
      )
    ).toBe('exited with code 3');
    expect(
      failureReason(makeJob('a', { status: 'failed', exit_code: 2 }))
    ).toBe('exit code 2');
  });
});
