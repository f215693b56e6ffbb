/**
 * A read-only main-area view of a job's file: text in a <pre>, images as <img>. Used for
 * outputs ("open in Lab") and for the promoted script, requirements and Dockerfile.
 */
import { MainAreaWidget } from '@jupyterlab/apputils';
import { Widget } from '@lumino/widgets';

import { jobsIcon } from './icons';

const IMAGE_TYPES: Record<string, string> = {
  png: 'image/png',
  jpg: 'image/jpeg',
  jpeg: 'image/jpeg',
  gif: 'image/gif',
  svg: 'image/svg+xml',
  webp: 'image/webp'
};

/** The image MIME type for a file name, or '' when it is not an image we show. */
export function imageType(name: string): string {
  const extension = name.split('.').pop()?.toLowerCase() ?? '';
  return IMAGE_TYPES[extension] ?? '';
}

export class FileView extends Widget {
  constructor(title: string, content: string | Blob, imageMime = '') {
    super();
    this.addClass('jp-CloudPromote-fileView');
    this.title.label = title;
    if (content instanceof Blob && imageMime) {
      const image = document.createElement('img');
      // Re-type the blob: the server sends every output as application/octet-stream.
      this._url = URL.createObjectURL(new Blob([content], { type: imageMime }));
      image.src = this._url;
      image.alt = title;
      this.node.appendChild(image);
    } else {
      const pre = document.createElement('pre');
      pre.tabIndex = 0;
      pre.setAttribute('aria-label', title);
      if (typeof content === 'string') {
        pre.textContent = content;
      } else {
        void content.text().then(text => (pre.textContent = text));
      }
      this.node.appendChild(pre);
    }
  }

  dispose(): void {
    if (this._url) {
      URL.revokeObjectURL(this._url);
    }
    super.dispose();
  }

  private _url = '';
}

export function fileWidget(
  title: string,
  content: string | Blob,
  imageMime = ''
): MainAreaWidget<FileView> {
  const widget = new MainAreaWidget({
    content: new FileView(title, content, imageMime)
  });
  widget.title.label = title;
  widget.title.icon = jobsIcon;
  widget.title.closable = true;
  return widget;
}
