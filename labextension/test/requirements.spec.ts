// The dialog's editable requirements list as data: what is sent, and when.
import { RequirementDetail } from '../src/api';
import {
  addRow,
  editedRequirements,
  editRow,
  removeRow,
  requirementLines,
  rowsFromDetails,
  rowSource
} from '../src/requirements';

const detected: RequirementDetail[] = [
  {
    requirement: 'numpy==1.26.4',
    name: 'numpy',
    source: 'import',
    imports: ['numpy']
  },
  { requirement: 'requests>=2.31', name: 'requests', source: 'pip-line' }
];

describe('editable requirements', () => {
  it('sends nothing while the list is as detected', () => {
    const rows = rowsFromDetails(detected);
    expect(requirementLines(rows)).toEqual(['numpy==1.26.4', 'requests>=2.31']);
    expect(editedRequirements(rows, detected)).toBeUndefined();
    expect(rowSource(rows[0])).toBe('import (import numpy)');
    expect(rowSource(rows[1])).toBe('pip-line');
  });

  it('sends exactly the edited lines, trimmed, without blanks', () => {
    let rows = rowsFromDetails(detected);
    rows = editRow(rows, rows[0].key, '  numpy>=1.26 ');
    rows = addRow(rows, 'pandas==2.1.3');
    rows = addRow(rows); // an empty row the user has not filled yet
    expect(editedRequirements(rows, detected)).toEqual([
      'numpy>=1.26',
      'requests>=2.31',
      'pandas==2.1.3'
    ]);
    expect(rowSource(rows[0])).toBe('edited');
    expect(rowSource(rows[2])).toBe('added');
  });

  it('treats removing every line as "install nothing", not as unedited', () => {
    let rows = rowsFromDetails(detected);
    for (const row of [...rows]) {
      rows = removeRow(rows, row.key);
    }
    expect(editedRequirements(rows, detected)).toEqual([]);
  });

  it('is unedited again when an edit is typed back to the detected text', () => {
    let rows = rowsFromDetails(detected);
    const key = rows[1].key;
    rows = editRow(rows, key, 'requests');
    expect(editedRequirements(rows, detected)).toEqual([
      'numpy==1.26.4',
      'requests'
    ]);
    rows = editRow(rows, key, 'requests>=2.31');
    expect(editedRequirements(rows, detected)).toBeUndefined();
    expect(rowSource(rows[1])).toBe('pip-line');
  });

  it('keeps row keys stable across edits and unique across adds', () => {
    const rows = addRow(addRow(rowsFromDetails(detected)));
    const keys = rows.map(row => row.key);
    expect(new Set(keys).size).toBe(keys.length);
    expect(editRow(rows, keys[0], 'x').map(row => row.key)).toEqual(keys);
  });
});
