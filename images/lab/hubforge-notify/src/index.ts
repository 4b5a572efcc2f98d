/** hubforge-notify: shows the notifications the server streams (hubforge/notifications/events) as toasts, and the
 * storage quotas' use (hubforge/usage) in the status bar. */
import {
  JupyterFrontEnd,
  JupyterFrontEndPlugin
} from '@jupyterlab/application';
import { Notification } from '@jupyterlab/apputils';
import { PageConfig, URLExt } from '@jupyterlab/coreutils';
import { IStatusBar } from '@jupyterlab/statusbar';
import { Widget } from '@lumino/widgets';

/** One `notification` event; the server (hubforge_notify/handlers.py) has validated every field. */
interface INotice {
  id: string;
  timestamp: string;
  message: string;
  type: Notification.TypeOptions;
  autoClose: number | false;
  sender: string | null;
}

/** One quota'd volume, as hubforge/usage answers (hubforge_notify/handlers.py quota_usage). */
interface IUsage {
  mount: string;
  quota: number | null;
  size: number;
  used: number;
}

const GIB = 1024 ** 3;

function shown(bytes: number): string {
  return bytes >= GIB ? `${(bytes / GIB).toFixed(1)} GiB` : `${Math.round(bytes / 1024 ** 2)} MiB`;
}

/** "home 1.2 GiB of 10.0 GiB · workspace ...", in the status bar, every minute; nothing without a quota. */
function showUsage(statusBar: IStatusBar): void {
  const item = new Widget();
  item.addClass('hubforge-usage');
  item.node.style.padding = '0 6px';
  statusBar.registerStatusItem('@hubforge/notify:usage', {
    item,
    align: 'left',
    rank: 100,
    isActive: () => item.node.textContent !== ''
  });
  const url = URLExt.join(PageConfig.getBaseUrl(), 'hubforge/usage');
  const refresh = async (): Promise<void> => {
    try {
      const response = await fetch(url, { credentials: 'same-origin' });
      const usage = (await response.json()) as Record<string, IUsage>;
      const parts = Object.entries(usage).map(
        ([kind, u]) => `${kind} ${shown(u.used)} of ${shown(u.quota ?? u.size)}`
      );
      item.node.textContent = parts.join(' · ');
      item.node.title = parts.length
        ? 'Storage quotas of your group: a write past one fails with "No space left on device".'
        : '';
    } catch (error) {
      console.warn('hubforge-notify: cannot read storage use', error);
    }
  };
  void refresh();
  window.setInterval(() => void refresh(), 60_000);
}

const plugin: JupyterFrontEndPlugin<void> = {
  id: '@hubforge/notify:plugin',
  description: 'Shows hubforge notifications as toasts in every open JupyterLab tab.',
  autoStart: true,
  optional: [IStatusBar],
  activate: (app: JupyterFrontEnd, statusBar: IStatusBar | null): void => {
    if (statusBar) {
      showUsage(statusBar);
    }
    // Toasts raised before the shell is restored only reach the notification centre.
    void app.restored.then(() => {
      // Same origin, so the server's auth cookie goes along. JupyterHub's single-user server also wants
      // the XSRF token on cookie-authenticated fetches, and EventSource cannot send headers: use _xsrf.
      const xsrf = document.cookie.match('\\b_xsrf=([^;]*)\\b')?.[1];
      const url =
        URLExt.join(PageConfig.getBaseUrl(), 'hubforge/notifications/events') +
        (xsrf ? `?_xsrf=${encodeURIComponent(xsrf)}` : '');
      // EventSource reconnects by itself.
      const source = new EventSource(url);
      source.addEventListener('notification', event => {
        try {
          const notice = JSON.parse((event as MessageEvent<string>).data) as INotice;
          // The message is plain text: Notification renders it as text, never as HTML.
          Notification.emit(notice.message, notice.type, {
            autoClose: notice.autoClose
          });
        } catch (error) {
          console.warn('hubforge-notify: ignoring a malformed event', error);
        }
      });
      source.onerror = () => {
        console.warn('hubforge-notify: event stream interrupted; the browser retries');
      };
    });
  }
};

export default plugin;
