// The panel module pulls in JupyterLab widgets, which do not load under plain Node:
// stand-ins are enough, as only the pure keyboard helper is tested here.
jest.mock('@jupyterlab/apputils', () => ({ ReactWidget: class {} }));
jest.mock('@jupyterlab/coreutils', () => ({}));
jest.mock('@jupyterlab/ui-components', () => ({}));

import { tabKeyTarget } from '../src/panel';

describe('tabKeyTarget', () => {
  it('moves right and left, wrapping around the ends', () => {
    expect(tabKeyTarget('ArrowRight', 0, 4)).toBe(1);
    expect(tabKeyTarget('ArrowRight', 3, 4)).toBe(0);
    expect(tabKeyTarget('ArrowLeft', 2, 4)).toBe(1);
    expect(tabKeyTarget('ArrowLeft', 0, 4)).toBe(3);
  });

  it('goes to the first and last tab with Home and End', () => {
    expect(tabKeyTarget('Home', 2, 4)).toBe(0);
    expect(tabKeyTarget('End', 1, 4)).toBe(3);
  });

  it('ignores other keys and an empty tab list', () => {
    for (const key of ['ArrowUp', 'ArrowDown', 'Enter', ' ', 'Tab', 'a']) {
      expect(tabKeyTarget(key, 1, 4)).toBeUndefined();
    }
    expect(tabKeyTarget('ArrowRight', 0, 0)).toBeUndefined();
  });
});
