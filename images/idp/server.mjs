// hubforge idp: the OpenID Connect provider that hubforge's tests sign in at, standing in for Keycloak or Casdoor.
//
// The provider is panva's oidc-provider (OpenID Certified): discovery, the code flow with PKCE, userinfo, tokens,
// RP-initiated logout. This file only gives it what every deployment must: accounts, a login page and a consent
// policy. Accounts, passwords and groups come from a JSON file (IDP_CONFIG) that is read again at every request,
// so a test can move a user out of a group while the provider runs:
//   {"issuer": "http://localhost:9000", "port": 9000,
//    "clients": [{"client_id": "...", "client_secret": "...", "redirect_uris": [...], "post_logout_redirect_uris": [...]}],
//    "users": [{"username": "ada", "password": "...", "email": "ada@example.org", "name": "Ada", "groups": ["team"]}]}
import { generateKeyPairSync, randomBytes, timingSafeEqual } from 'node:crypto';
import { readFileSync } from 'node:fs';

import Provider from 'oidc-provider';

const CONFIG = process.env.IDP_CONFIG || '/etc/idp/config.json';
const load = () => JSON.parse(readFileSync(CONFIG, 'utf8'));
const boot = load();


function findUser(username) {
  return (load().users || []).find((user) => user.username === username);
}

function samePassword(given, expected) {
  const a = Buffer.from(String(given));
  const b = Buffer.from(String(expected));
  return a.length === b.length && timingSafeEqual(a, b);
}

const escape = (text) => String(text).replace(/[&<>"']/g, (c) => `&#${c.charCodeAt(0)};`);

function page(title, body) {
  return `<!DOCTYPE html><html lang="en"><head><meta charset="utf-8"><title>${escape(title)}</title>
<style>body{font-family:sans-serif;max-width:26em;margin:4em auto}label,input,button{display:block;margin:.4em 0}</style>
</head><body><h1>${escape(title)}</h1>${body}</body></html>`;
}

function loginForm(uid, clientName, error) {
  return page('hubforge test IdP: sign in', `
<p>Sign in to continue to ${escape(clientName)}.</p>
${error ? `<p role="alert">${escape(error)}</p>` : ''}
<form method="post" action="/interaction/${escape(uid)}/login" autocomplete="off">
  <label for="username">Username</label><input id="username" name="username" required autofocus>
  <label for="password">Password</label><input id="password" name="password" type="password" required>
  <button type="submit">Sign in</button>
</form>`);
}

async function formBody(req) {
  const chunks = [];
  let size = 0;
  for await (const chunk of req) {
    size += chunk.length;
    if (size > 16384) throw new Error('form too large');
    chunks.push(chunk);
  }
  return new URLSearchParams(Buffer.concat(chunks).toString('utf8'));
}

function serve() {
  const { privateKey } = generateKeyPairSync('rsa', { modulusLength: 2048 });
  const provider = new Provider(boot.issuer, {
    clients: boot.clients,
    jwks: { keys: [{ ...privateKey.export({ format: 'jwk' }), kid: 'idp-1', use: 'sig', alg: 'RS256' }] },
    cookies: { keys: [randomBytes(32).toString('hex')] },
    // Scopes are the keys: "groups" is a scope of its own, as Keycloak's and Casdoor's are.
    claims: {
      openid: ['sub'],
      profile: ['preferred_username', 'name'],
      email: ['email', 'email_verified'],
      groups: ['groups'],
    },
    async findAccount(ctx, sub) {
      const user = findUser(sub);
      if (!user) return undefined;
      return {
        accountId: sub,
        async claims() {
          const now = findUser(sub) || user; // read again: group changes show at the next userinfo call
          return {
            sub,
            preferred_username: now.preferred_username || now.username,
            name: now.name || now.username,
            email: now.email,
            email_verified: true,
            groups: now.groups || [],
          };
        },
      };
    },
    features: {
      devInteractions: { enabled: false },
      // The provider's own pages, without the stock ones' web fonts: nothing here loads from outside this machine.
      rpInitiatedLogout: {
        enabled: true,
        logoutSource(ctx, form) {
          ctx.body = page('hubforge test IdP: sign out', `<p>Do you want to sign out of the identity provider?</p>${form}
  <button autofocus type="submit" form="op.logoutForm" value="yes" name="logout">Yes, sign me out</button>
  <button type="submit" form="op.logoutForm">No, stay signed in</button>`);
        },
        postLogoutSuccessSource(ctx) {
          ctx.body = page('hubforge test IdP: signed out', '<p>You are signed out of the identity provider.</p>');
        },
      },
    },
    interactions: { url: (ctx, interaction) => `/interaction/${interaction.uid}` },
    ttl: { AccessToken: 3600, IdToken: 3600, Interaction: 600, Session: 86400, Grant: 86400 },
  });
  provider.proxy = true;

  // The login page and the consent policy of a first-party provider: every client here is trusted, so the grant
  // covers what the client asked for, as an organisation's own Keycloak realm would be configured.
  provider.use(async (ctx, next) => {
    const match = ctx.path.match(/^\/interaction\/([^/]+)(\/login)?$/);
    if (!match) return next();
    ctx.set('Cache-Control', 'no-store');
    const details = await provider.interactionDetails(ctx.req, ctx.res);
    const client = await provider.Client.find(details.params.client_id);
    const clientName = client?.clientName || details.params.client_id;
    if (details.prompt.name === 'consent') {
      const grant = details.grantId ? await provider.Grant.find(details.grantId)
        : new provider.Grant({ accountId: details.session.accountId, clientId: details.params.client_id });
      const missing = details.prompt.details;
      if (missing.missingOIDCScope) grant.addOIDCScope(missing.missingOIDCScope.join(' '));
      if (missing.missingOIDCClaims) grant.addOIDCClaims(missing.missingOIDCClaims);
      const grantId = await grant.save();
      ctx.respond = false;
      return provider.interactionFinished(ctx.req, ctx.res, { consent: { grantId } }, { mergeWithLastSubmission: true });
    }
    if (ctx.method === 'GET' && !match[2]) {
      ctx.type = 'html';
      ctx.body = loginForm(details.uid, clientName);
      return undefined;
    }
    if (ctx.method === 'POST' && match[2]) {
      const form = await formBody(ctx.req);
      const user = findUser(form.get('username') || '');
      if (!user || !samePassword(form.get('password') || '', user.password)) {
        console.log(`idp: refused a sign-in as ${JSON.stringify(form.get('username'))}`);
        ctx.status = 401;
        ctx.type = 'html';
        ctx.body = loginForm(details.uid, clientName, 'Invalid username or password.');
        return undefined;
      }
      console.log(`idp: ${user.username} signed in for ${details.params.client_id}`);
      ctx.respond = false;
      return provider.interactionFinished(ctx.req, ctx.res, { login: { accountId: user.username } },
        { mergeWithLastSubmission: false });
    }
    ctx.status = 405;
    return undefined;
  });
  const port = Number(boot.port || process.env.PORT || 9000);
  provider.listen(port, '0.0.0.0', () => console.log(`idp: ${boot.issuer} listening on port ${port}`));
}

if (process.argv.includes('--health')) { // the image's health check: the discovery document answers
  const url = `http://127.0.0.1:${boot.port || 9000}/.well-known/openid-configuration`;
  fetch(url).then((answer) => process.exit(answer.ok ? 0 : 1), () => process.exit(1));
} else {
  serve();
}
