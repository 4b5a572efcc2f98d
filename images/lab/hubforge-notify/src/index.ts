/** hubforge-notify: shows the notifications the server streams (hubforge/notifications/events) as toasts. */
import {
  JupyterFrontEnd,
  JupyterFrontEndPlugin
} from '@jupyterlab/application';
import { Notification } from '@jupyterlab/apputils';
import { PageConfig, URLExt } from '@jupyterlab/coreutils';

/** One `notification` event; the server (hubforge_notify/handlers.py) has validated every field. */
interface INotice {
  id: string;
  timestamp: string;
  message: string;
  type: Notification.TypeOptions;
  autoClose: number | false;
  sender: string | null;
}

const plugin: JupyterFrontEndPlugin<void> = {
  id: '@hubforge/notify:plugin',
  description: 'Shows hubforge notifications as toasts in every open JupyterLab tab.',
  autoStart: true,
  activate: (app: JupyterFrontEnd): void => {
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
