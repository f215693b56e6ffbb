// Unit tests cover the parts with no JupyterLab runtime dependency: the API client and
// the jobs model. They run as CommonJS through ts-jest; the widgets are covered by the
// real-browser tests in ../tests/test_lab_browser.py.
module.exports = {
  testEnvironment: 'node',
  roots: ['<rootDir>/test'],
  transform: {
    '^.+\\.tsx?$': ['ts-jest', { tsconfig: 'tsconfig.test.json' }]
  }
};
