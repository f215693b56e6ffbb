// Build the federated lab extension without any download: @jupyterlab/builder needs a
// "core path" (a folder whose package.json lists JupyterLab's shared packages). The npm
// package @jupyterlab/core-meta ships exactly that file as core.package.json, so stage it
// as <tmp>/package.json and point the builder at it.
const { spawnSync } = require('child_process');
const fs = require('fs');
const os = require('os');
const path = require('path');

const here = path.resolve(__dirname, '..');
const coreFile = require.resolve('@jupyterlab/core-meta/core.package.json', {
  paths: [here]
});
const corePath = fs.mkdtempSync(path.join(os.tmpdir(), 'cloudpromote-core-'));
fs.copyFileSync(coreFile, path.join(corePath, 'package.json'));
const builder = require.resolve('@jupyterlab/builder/lib/build-labextension.js', {
  paths: [here]
});
const args = [builder, '--core-path', corePath, ...process.argv.slice(2), here];
const result = spawnSync(process.execPath, args, { stdio: 'inherit', cwd: here });
fs.rmSync(corePath, { recursive: true, force: true });
process.exit(result.status === null ? 1 : result.status);
