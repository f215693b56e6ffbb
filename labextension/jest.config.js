// Unit tests cover the logic that needs no JupyterLab runtime: the API client, the jobs
// model, requirement editing and the panel's keyboard helper (its JupyterLab imports are
// stubbed). They run as CommonJS through ts-jest; the widgets themselves are covered by the
// real-browser tests in ../tests/test_lab_browser.py.
module.exports = {
  testEnvironment: 'node',
  roots: ['<rootDir>/test'],
  transform: {
    '^.+\\.tsx?$': ['ts-jest', { tsconfig: 'tsconfig.test.json' }]
  }
};
