// The API page: renders /api/v1/openapi.json (served as a file: the CSP allows no inline script).
fetch('/api/v1/openapi.json').then(r => r.json()).then(doc => {
  document.getElementById('desc').textContent = doc.info.description;
  const ops = document.getElementById('ops');
  for (const [path, methods] of Object.entries(doc.paths)) {
    for (const [method, op] of Object.entries(methods)) {
      const div = document.createElement('div');
      div.className = 'op';
      const scope = op['x-scope'] ? 'scope: ' + op['x-scope'] : 'public';
      div.innerHTML = '<span class="scope"></span><span class="m ' + method + '"></span><code></code><div></div>';
      div.querySelector('.scope').textContent = scope;
      div.querySelector('.m').textContent = method;
      div.querySelector('code').textContent = path;
      div.querySelector('div').textContent = op.summary;
      const body = op.requestBody && op.requestBody.content['application/json'].example;
      if (body) { const pre = document.createElement('pre'); pre.textContent = body; div.appendChild(pre); }
      ops.appendChild(div);
    }
  }
});
