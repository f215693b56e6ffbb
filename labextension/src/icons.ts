import { LabIcon } from '@jupyterlab/ui-components';

// Inline SVGs with JupyterLab's icon classes, so the icons follow the theme's colours.
const promoteSvg = `<svg xmlns="http://www.w3.org/2000/svg" width="16" height="16" viewBox="0 0 24 24">
  <g class="jp-icon3" fill="#616161">
    <path d="M19.35 10.04A7.49 7.49 0 0 0 12 4C9.11 4 6.6 5.64 5.35 8.04A5.994 5.994 0 0 0 0 14c0 3.31 2.69 6 6 6h13c2.76 0 5-2.24 5-5 0-2.64-2.05-4.78-4.65-4.96zM14 13v4h-4v-4H7l5-5 5 5h-3z"/>
  </g>
</svg>`;

const jobsSvg = `<svg xmlns="http://www.w3.org/2000/svg" width="16" height="16" viewBox="0 0 24 24">
  <g class="jp-icon3" fill="#616161">
    <path d="M4 5h16v3H4zm0 5.5h16v3H4zM4 16h16v3H4z" opacity=".35"/>
    <path d="M5 6h2v1H5zm0 5.5h2v1H5zM5 17h2v1H5z"/>
    <path d="M19.35 2.6 21 4.2l-3.3 3.3L15.9 5.7l1.1-1.1.7.7z"/>
  </g>
</svg>`;

export const promoteIcon = new LabIcon({
  name: 'cloudpromote:promote',
  svgstr: promoteSvg
});

export const jobsIcon = new LabIcon({
  name: 'cloudpromote:jobs',
  svgstr: jobsSvg
});
