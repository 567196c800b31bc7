// DifyGuardServer.close(): in-flight requests finish within the timeout; what is still open after it
// is cut, so a stuck client cannot hold the shutdown beyond its bound.
import t from 'tap';
import { readFileSync } from 'node:fs';
import { request } from 'node:https';
import { contract } from '../../src/contract.js';
import { captureLog, generateCerts, startServer, tempDir } from './support.js';
import { eventually } from '../../harness/commands.js';

t.test('a request stuck mid-body is cut at the close timeout', async (t) => {
  const certs = generateCerts(tempDir(t));
  const captured = captureLog();
  const { server, port } = await startServer(t, {
    log: captured.log,
    tls: { certFile: certs.certFile, keyFile: certs.keyFile },
  });
  const outcome = new Promise<string>((resolve) => {
    const req = request(
      {
        host: '127.0.0.1',
        servername: 'localhost',
        port,
        path: contract.webhook.validateSecretsPath,
        method: 'POST',
        ca: readFileSync(certs.caFile),
        agent: false,
        headers: { 'content-type': 'application/json', 'content-length': 1000 },
      },
      (res) => resolve(`answered ${res.statusCode}`),
    );
    req.on('error', (error: NodeJS.ErrnoException) => resolve(error.code ?? 'error'));
    req.write('{"apiVersion": ');
  });
  await eventually('the request to reach the server', () =>
    captured.lines().some((l) => l.msg === 'admission request received'),
  );
  await server.close(200);
  t.equal(await outcome, 'ECONNRESET', 'the stuck request was cut');
  t.match(
    captured.lines().find((l) => l.msg === 'shutdown timeout: closing the connections still open'),
    { timeoutMs: 200 },
  );
  t.equal(server.readiness().shuttingDown, true);
});
