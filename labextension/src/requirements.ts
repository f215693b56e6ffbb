/**
 * The editable requirements list of the promotion dialog, as plain data: rows start as the
 * detected requirements (each with where it came from), the user edits, adds and removes
 * lines, and only an edited list is sent (`requirements` of preview and submit), so an
 * untouched dialog keeps the server's resolution. No JupyterLab imports: unit-tested.
 */
import { RequirementDetail } from './api';

export interface IRequirementRow {
  /** Stable key for the row while its text changes. */
  key: number;
  text: string;
  /** The detected requirement this row started as; null for a row the user added. */
  origin: RequirementDetail | null;
}

let nextKey = 0;

function newKey(): number {
  nextKey += 1;
  return nextKey;
}

/** One row per detected requirement, in the server's order. */
export function rowsFromDetails(
  details: readonly RequirementDetail[]
): IRequirementRow[] {
  return details.map(detail => ({
    key: newKey(),
    text: detail.requirement,
    origin: detail
  }));
}

export function addRow(
  rows: readonly IRequirementRow[],
  text = ''
): IRequirementRow[] {
  return [...rows, { key: newKey(), text, origin: null }];
}

export function removeRow(
  rows: readonly IRequirementRow[],
  key: number
): IRequirementRow[] {
  return rows.filter(row => row.key !== key);
}

export function editRow(
  rows: readonly IRequirementRow[],
  key: number,
  text: string
): IRequirementRow[] {
  return rows.map(row => (row.key === key ? { ...row, text } : row));
}

/** The lines a request would carry: trimmed, blank ones dropped, order kept. */
export function requirementLines(rows: readonly IRequirementRow[]): string[] {
  return rows.map(row => row.text.trim()).filter(line => line.length > 0);
}

/** Whether the rows say something other than the detected requirements. */
export function isEdited(
  rows: readonly IRequirementRow[],
  detected: readonly RequirementDetail[]
): boolean {
  const lines = requirementLines(rows);
  return (
    lines.length !== detected.length ||
    lines.some((line, index) => line !== detected[index].requirement)
  );
}

/** What to send as `requirements`: the lines when edited, otherwise nothing. */
export function editedRequirements(
  rows: readonly IRequirementRow[],
  detected: readonly RequirementDetail[]
): string[] | undefined {
  return isEdited(rows, detected) ? requirementLines(rows) : undefined;
}

/** Where a row's requirement comes from, as the dialog shows it. */
export function rowSource(row: IRequirementRow): string {
  if (row.origin && row.text.trim() === row.origin.requirement) {
    const imports = row.origin.imports ?? [];
    return imports.length
      ? `${row.origin.source} (import ${imports.join(', ')})`
      : row.origin.source;
  }
  return row.origin ? 'edited' : 'added';
}
