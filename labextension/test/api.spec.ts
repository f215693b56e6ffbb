// The API client against a recording fetch stand-in (mock): what it sends, how it reads
// answers and errors. The real server is exercised by tests/test_lab_browser.py.
import { ApiError, CloudPromoteClient, RequestFn } from '../src/api';

interface Call {
  path: string;
  init: RequestInit;
}

function mockServer(
  status: number,
  body: unknown
): { request: RequestFn; calls: Call[] } {
  const calls: Call[] = [];
  const request: RequestFn = async (path, init) => {
    calls.push({ path, init });
    const text = body === undefined ? '' : JSON.stringify(body);
    return {
      ok: status >= 200 && status < 300,
      status,
      text: async () => text,
      blob: async () => ({ size: text.length }) as unknown as Blob
    } as Response;
  };
  return { request, calls };
}

const job = {
  id: 'abc123',
  notebook: '/srv/nb/hello.ipynb',
  backend: 'local',
  backend_kind: 'local',
  status: 'pending',
  created: 100,
  updated: 100,
  reason: '',
  exit_code: null
};

describe('CloudPromoteClient (mock fetch)', () => {
  it('lists jobs with the query, without sending empty filters', async () => {
    const { request, calls } = mockServer(200, { jobs: [job], total: 1 });
    const page = await new CloudPromoteClient(request).listJobs({
      limit: 200,
      sort: 'created-desc',
      status: '',
      backend: 'local'
    });
    expect(calls[0].path).toBe(
      'cloudpromote/jobs?limit=200&sort=created-desc&backend=local'
    );
    expect(calls[0].init.method).toBe('GET');
    // 'no-store' would make JupyterLab append a cache-busting argument the server refuses.
    expect(calls[0].init.cache).toBe('no-cache');
    expect(page.total).toBe(1);
    expect(page.jobs[0].id).toBe('abc123');
  });

  it('posts a submission as JSON and returns the created job', async () => {
    const { request, calls } = mockServer(201, job);
    const created = await new CloudPromoteClient(request).submit({
      path: 'dir/hello.ipynb',
      backend: 'local',
      parameters: { repeat: 2 },
      resources: { cpus: 2 }
    });
    expect(calls[0].path).toBe('cloudpromote/jobs');
    expect(calls[0].init.method).toBe('POST');
    expect(
      (calls[0].init.headers as Record<string, string>)['Content-Type']
    ).toBe('application/json');
    expect(JSON.parse(calls[0].init.body as string)).toEqual({
      path: 'dir/hello.ipynb',
      backend: 'local',
      parameters: { repeat: 2 },
      resources: { cpus: 2 }
    });
    expect(created.status).toBe('pending');
  });

  it('sends edited requirement lines with preview and submit', async () => {
    const { request, calls } = mockServer(200, job);
    const client = new CloudPromoteClient(request);
    await client.preview({ path: 'a.ipynb', requirements: ['numpy>=1.26'] });
    await client.submit({ path: 'a.ipynb', requirements: [] });
    expect(JSON.parse(calls[0].init.body as string)).toEqual({
      path: 'a.ipynb',
      requirements: ['numpy>=1.26']
    });
    // An empty list is sent as such: it means "install nothing".
    expect(JSON.parse(calls[1].init.body as string)).toEqual({
      path: 'a.ipynb',
      requirements: []
    });
  });

  it('turns an error answer into an ApiError with the message and the fix', async () => {
    const { request } = mockServer(400, {
      message: "'backend' must be a backend profile name.",
      reason: 'Bad Request',
      fix: 'Pick a profile from GET backends.'
    });
    const client = new CloudPromoteClient(request);
    await expect(client.preview({ path: 'x.ipynb' })).rejects.toMatchObject({
      name: 'ApiError',
      status: 400,
      message: "'backend' must be a backend profile name.",
      fix: 'Pick a profile from GET backends.'
    });
  });

  it('reports an unreachable server as an ApiError with status 0', async () => {
    const client = new CloudPromoteClient(async () => {
      throw new TypeError('Failed to fetch');
    });
    const error = await client.getJob('abc').catch(e => e);
    expect(error).toBeInstanceOf(ApiError);
    expect(error.status).toBe(0);
  });

  it('merges profiles with their kind availability and marks the default', async () => {
    const { request } = mockServer(200, {
      default: 'local',
      profiles: [
        { name: 'local', kind: 'local', configured: false },
        { name: 'gpu', kind: 'slurm', configured: true }
      ],
      backends: [
        { kind: 'local', available: true, features: ['cancel'] },
        {
          kind: 'slurm',
          available: false,
          install_hint: 'apt-get install slurm-client'
        }
      ]
    });
    const backends = await new CloudPromoteClient(request).backends();
    expect(backends.map(b => [b.name, b.available, b.default])).toEqual([
      ['local', true, true],
      ['gpu', false, false]
    ]);
    expect(backends[1].install_hint).toBe('apt-get install slurm-client');
  });

  it('reads logs by range and returns where the next read starts', async () => {
    const { request, calls } = mockServer(200, {
      text: 'line 1\n',
      offset: 10,
      next_offset: 17
    });
    const chunk = await new CloudPromoteClient(request).logs('abc', 'run', 10);
    expect(calls[0].path).toBe(
      'cloudpromote/jobs/abc/logs?phase=run&offset=10'
    );
    expect(chunk).toEqual({ text: 'line 1\n', offset: 17 });
  });

  it('encodes ids and output paths but keeps the path separators', async () => {
    const { request, calls } = mockServer(204, undefined);
    const client = new CloudPromoteClient(request);
    await client.remove('ab/../c');
    expect(calls[0].path).toBe('cloudpromote/jobs/ab%2F..%2Fc');
    expect(calls[0].init.method).toBe('DELETE');
    expect(CloudPromoteClient.outputRoute('abc', 'plots/a b.png')).toBe(
      'cloudpromote/jobs/abc/outputs/plots/a%20b.png'
    );
  });

  it('posts cancel and rerun to the job routes', async () => {
    const { request, calls } = mockServer(200, job);
    const client = new CloudPromoteClient(request);
    await client.cancel('abc');
    await client.rerun('abc');
    expect(calls.map(c => `${c.init.method} ${c.path}`)).toEqual([
      'POST cloudpromote/jobs/abc/cancel',
      'POST cloudpromote/jobs/abc/rerun'
    ]);
  });
});
