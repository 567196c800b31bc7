// The platform's limit: a bare Node HTTPS server on the same certificate and TLS floor as
// dify-guard, with the same keep-alive settings, that reads each request body in full and answers
// a constant "allowed" AdmissionReview. No parsing, no framework, no logging. Plain JavaScript, so
// that Node runs it without a loader (as dify-guard runs from dist/).
// Env: BENCH_BARE_PORT, BENCH_BARE_CERT, BENCH_BARE_KEY.
import { readFileSync } from 'node:fs';
import { createServer } from 'node:https';

const port = Number(process.env.BENCH_BARE_PORT);
const answer = Buffer.from(
  JSON.stringify({
    apiVersion: 'admission.k8s.io/v1',
    kind: 'AdmissionReview',
    response: { uid: '', allowed: true },
  }),
);

const server = createServer(
  {
    cert: readFileSync(String(process.env.BENCH_BARE_CERT)),
    key: readFileSync(String(process.env.BENCH_BARE_KEY)),
    minVersion: 'TLSv1.2',
  },
  (request, response) => {
    request.on('data', () => {
      /* the body is read and dropped */
    });
    request.on('end', () => {
      response.writeHead(200, { 'content-type': 'application/json; charset=utf-8', 'content-length': answer.length });
      response.end(answer);
    });
  },
);
server.keepAliveTimeout = 90_000;
server.headersTimeout = 32_000;
server.requestTimeout = 30_000;
server.listen(port, '127.0.0.1', () => process.stdout.write(`bare server listening on https://127.0.0.1:${port}\n`));
process.on('SIGTERM', () => server.close(() => process.exit(0)));
