// The HTTP side of admission, written once for every route (controller-runtime's http.go):
// content type, size limit, JSON decoding, envelope validation, uid echo, fault -> 500, metrics.
// It knows nothing of policies, and it never logs or echoes request body content (Secrets!).
import type { FastifyError, FastifyInstance, FastifyReply, FastifyRequest } from 'fastify';
import type { AdmissionRequest } from '../admission/types.js';
import type { Metrics } from '../metrics.js';
import {
  ADMISSION_API_VERSION,
  ADMISSION_KIND,
  checkAdmissionReview,
  decisionOf,
  errored,
  reviewResponse,
  uidOf,
  type AdmissionHandler,
  type AdmissionVerdict,
} from './admission-review.js';

export interface AdmissionRoute {
  path: string;
  handler: AdmissionHandler;
}

export interface AdmissionPluginOptions {
  routes: AdmissionRoute[];
  bodyLimitBytes: number;
  metrics: Metrics;
}

type Outcome = 'allowed' | 'patched' | 'denied' | 'rejected' | 'error';

/** What is known about a request while it is handled: names only, never content. */
interface AdmissionTrace {
  startedAt: bigint;
  uid: string;
  outcome: Outcome;
  operation?: string;
  kind?: string;
  namespace?: string;
  name?: string;
}

declare module 'fastify' {
  interface FastifyRequest {
    admissionTrace: AdmissionTrace | null;
  }
}

/** A bad request: the status and a message naming the problem. */
class AdmissionInputError extends Error {
  constructor(
    readonly statusCode: number,
    readonly reason: string,
    message: string,
  ) {
    super(message);
  }
}

const JSON_MEDIA_TYPE = 'application/json';

/** Said for a body that is empty or only whitespace, whichever layer finds it. */
const EMPTY_BODY = 'request body is empty: expected an AdmissionReview';

export async function admissionPlugin(app: FastifyInstance, options: AdmissionPluginOptions): Promise<void> {
  const { metrics, bodyLimitBytes } = options;
  app.decorateRequest('admissionTrace', null);
  // Only JSON is accepted; fastify's own parsers are replaced so that no parser error can quote the body.
  app.removeAllContentTypeParsers();
  app.addContentTypeParser(JSON_MEDIA_TYPE, { parseAs: 'buffer', bodyLimit: bodyLimitBytes }, parseJsonBody);
  app.addHook('onRequest', async (request) => {
    request.admissionTrace = { startedAt: process.hrtime.bigint(), uid: '', outcome: 'rejected' };
    request.log.trace({ url: request.url }, 'admission request received');
  });
  app.addHook('onResponse', async (request, reply) => answered(request, reply, metrics));
  app.setErrorHandler((error: FastifyError | AdmissionInputError, request, reply) =>
    answerError(error, request, reply, bodyLimitBytes),
  );
  for (const route of options.routes) {
    app.post(route.path, { bodyLimit: bodyLimitBytes }, async (request, reply) => answerReview(route, request, reply));
  }
}

/** The body as JSON; an error that names the problem, never the content, when it is empty or not JSON. */
function parseJsonBody(
  _request: FastifyRequest,
  body: string | Buffer,
  done: (error: Error | null, value?: unknown) => void,
): void {
  const text = (body as Buffer).toString('utf8');
  if (text.trim() === '') {
    done(new AdmissionInputError(400, 'BadRequest', EMPTY_BODY), undefined);
    return;
  }
  try {
    done(null, JSON.parse(text));
  } catch (error) {
    // JSON.parse's message quotes the input, so only the position is passed on.
    const position = /position (\d+)/.exec(String((error as Error).message))?.[1];
    done(
      new AdmissionInputError(
        400,
        'BadRequest',
        `malformed JSON in the request body${position ? ` at position ${position}` : ''}: expected an AdmissionReview`,
      ),
      undefined,
    );
  }
}

/** The metrics and the one log line of an answered request (names only). */
function answered(request: FastifyRequest, reply: FastifyReply, metrics: Metrics): void {
  const trace = request.admissionTrace;
  const route = request.routeOptions.url;
  if (!trace || route === undefined) return;
  const seconds = Number(process.hrtime.bigint() - trace.startedAt) / 1e9;
  const code = reply.statusCode;
  metrics.requests.inc({ route, decision: trace.outcome, code: String(code) });
  metrics.requestDuration.observe({ route }, seconds);
  const { uid, outcome: decision, operation, kind, namespace, name } = trace;
  request.log.debug(
    { uid, route, decision, code, seconds, operation, kind, namespace, name },
    'admission request answered',
  );
}

/** A bad request is answered with its status and problem; anything else is a fault (500). */
function answerError(
  error: FastifyError | AdmissionInputError,
  request: FastifyRequest,
  reply: FastifyReply,
  bodyLimitBytes: number,
): FastifyReply {
  const trace = request.admissionTrace;
  const rejection = describeRejection(error, request, bodyLimitBytes);
  if (!rejection) return answerFault(request, reply, error);
  if (trace) trace.outcome = 'rejected';
  const uid = trace?.uid ?? '';
  request.log.info(
    { uid, route: request.routeOptions.url, code: rejection.statusCode, problem: rejection.message },
    'admission request rejected',
  );
  return reply
    .code(rejection.statusCode)
    .send(reviewResponse(uid, errored(rejection.statusCode, rejection.reason, rejection.message)));
}

/** One AdmissionReview: the envelope checked, the route's handler asked, its verdict sent back with the uid. */
async function answerReview(
  route: AdmissionRoute,
  request: FastifyRequest,
  reply: FastifyReply,
): Promise<FastifyReply> {
  const trace = request.admissionTrace as AdmissionTrace;
  trace.uid = uidOf(request.body);
  const admission = admissionRequestOf(request);
  Object.assign(trace, {
    operation: admission.operation,
    kind: admission.kind.kind,
    namespace: admission.namespace,
    name: admission.name || undefined,
  });
  let verdict: AdmissionVerdict;
  try {
    verdict = await route.handler(admission);
  } catch (fault) {
    return answerFault(request, reply, fault);
  }
  trace.outcome = decisionOf(verdict);
  return reply.code(200).send(reviewResponse(trace.uid, verdict));
}

/** The request of a valid AdmissionReview; throws the AdmissionInputError that says what is wrong. */
function admissionRequestOf(request: FastifyRequest): AdmissionRequest {
  if (!isJson(request.headers['content-type'])) throw unsupportedMediaType(request);
  if (request.body === undefined || request.body === null) {
    throw new AdmissionInputError(400, 'BadRequest', EMPTY_BODY);
  }
  const check = checkAdmissionReview(request.body);
  if (!check.ok) {
    throw new AdmissionInputError(
      400,
      'BadRequest',
      `not a valid ${ADMISSION_API_VERSION} ${ADMISSION_KIND}: ${check.problems.join('; ')}`,
    );
  }
  return check.request;
}

function answerFault(request: FastifyRequest, reply: FastifyReply, fault: unknown): FastifyReply {
  const trace = request.admissionTrace;
  if (trace) trace.outcome = 'error';
  const uid = trace?.uid ?? '';
  // The fault's message may quote what it was reading, so only its type and stack frames are logged.
  request.log.error({ uid, route: request.routeOptions.url, fault: faultSummary(fault) }, 'admission handler failed');
  return reply
    .code(500)
    .send(
      reviewResponse(
        uid,
        errored(
          500,
          'InternalError',
          `dify-guard could not judge this request (uid ${uid || 'unknown'}): internal error, see the webhook's log`,
        ),
      ),
    );
}

/** The type and stack frames of a fault, without its message. */
export function faultSummary(fault: unknown): { type: string; frames: string[] } {
  if (!(fault instanceof Error)) return { type: typeof fault, frames: [] };
  const frames = (fault.stack ?? '')
    .split('\n')
    .filter((line) => /^\s+at /.test(line))
    .map((line) => line.trim())
    .slice(0, 10);
  return { type: fault.name || fault.constructor.name, frames };
}

function describeRejection(
  error: FastifyError | AdmissionInputError,
  request: FastifyRequest,
  limit: number,
): { statusCode: number; reason: string; message: string } | undefined {
  if (error instanceof AdmissionInputError) return error;
  switch (error.code) {
    case 'FST_ERR_CTP_BODY_TOO_LARGE':
      return {
        statusCode: 413,
        reason: 'RequestEntityTooLarge',
        message: `request body is larger than the limit of ${limit} bytes`,
      };
    case 'FST_ERR_CTP_INVALID_MEDIA_TYPE':
      return unsupportedMediaType(request);
    case 'FST_ERR_CTP_EMPTY_JSON_BODY':
      return { statusCode: 400, reason: 'BadRequest', message: EMPTY_BODY };
    case 'FST_ERR_CTP_INVALID_CONTENT_LENGTH':
      return {
        statusCode: 400,
        reason: 'BadRequest',
        message: 'request body length does not match its Content-Length header',
      };
    default:
      break;
  }
  const statusCode = error.statusCode ?? 500;
  if (statusCode >= 400 && statusCode < 500) {
    return { statusCode, reason: 'BadRequest', message: `request rejected (${error.code ?? 'bad request'})` };
  }
  return undefined;
}

function unsupportedMediaType(request: FastifyRequest): AdmissionInputError {
  const header = request.headers['content-type'];
  const got = header === undefined ? 'no Content-Type header' : `Content-Type ${JSON.stringify(header.slice(0, 100))}`;
  return new AdmissionInputError(
    415,
    'UnsupportedMediaType',
    `unsupported content type: expected ${JSON_MEDIA_TYPE}, got ${got}`,
  );
}

function isJson(contentType: string | undefined): boolean {
  return contentType !== undefined && contentType.split(';')[0]?.trim().toLowerCase() === JSON_MEDIA_TYPE;
}
