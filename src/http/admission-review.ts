// AdmissionReview v1 on the wire: the envelope schema (compiled once), the verdict a handler
// returns, and the helpers that turn verdicts into responses, so no handler builds one by hand.
import { Ajv, type ErrorObject } from 'ajv';
import type { AdmissionRequest, PatchOperation } from '../admission/types.js';

export const ADMISSION_API_VERSION = 'admission.k8s.io/v1';
export const ADMISSION_KIND = 'AdmissionReview';

/** What a handler decides; the HTTP layer adds the uid and encodes the patch. */
export interface AdmissionVerdict {
  allowed: boolean;
  status?: { code: number; reason?: string; message: string };
  patch?: PatchOperation[];
  warnings?: string[];
  auditAnnotations?: Record<string, string>;
}

/** A decision function: controller-runtime's Handler, as a plain function. */
export type AdmissionHandler = (request: AdmissionRequest) => AdmissionVerdict | Promise<AdmissionVerdict>;

export interface AdmissionReviewResponse {
  apiVersion: typeof ADMISSION_API_VERSION;
  kind: typeof ADMISSION_KIND;
  response: {
    uid: string;
    allowed: boolean;
    status?: { code: number; reason?: string; message: string };
    patchType?: 'JSONPatch';
    patch?: string;
    warnings?: string[];
    auditAnnotations?: Record<string, string>;
  };
}

export function allowed(warnings: string[] = []): AdmissionVerdict {
  return warnings.length > 0 ? { allowed: true, warnings } : { allowed: true };
}

export function patched(patch: PatchOperation[], warnings: string[] = []): AdmissionVerdict {
  const verdict = allowed(warnings);
  return patch.length > 0 ? { ...verdict, patch } : verdict;
}

export function denied(message: string, warnings: string[] = []): AdmissionVerdict {
  return { ...allowed(warnings), allowed: false, status: { code: 403, reason: 'Forbidden', message } };
}

/** A request that could not be judged (bad input or a fault): the HTTP status says which. */
export function errored(code: number, reason: string, message: string): AdmissionVerdict {
  return { allowed: false, status: { code, reason, message } };
}

/** How a verdict is counted in metrics. */
export function decisionOf(verdict: AdmissionVerdict): 'allowed' | 'patched' | 'denied' {
  if (!verdict.allowed) return 'denied';
  return verdict.patch && verdict.patch.length > 0 ? 'patched' : 'allowed';
}

/** The AdmissionReview answered for one request uid ('' when the request had none). */
export function reviewResponse(uid: string, verdict: AdmissionVerdict): AdmissionReviewResponse {
  const response: AdmissionReviewResponse['response'] = { uid, allowed: verdict.allowed };
  if (verdict.status) response.status = verdict.status;
  // An empty patch is omitted entirely, with its patchType (the API server rejects a type without a patch).
  if (verdict.patch && verdict.patch.length > 0) {
    response.patchType = 'JSONPatch';
    response.patch = Buffer.from(JSON.stringify(verdict.patch), 'utf8').toString('base64');
  }
  if (verdict.warnings && verdict.warnings.length > 0) response.warnings = verdict.warnings;
  if (verdict.auditAnnotations && Object.keys(verdict.auditAnnotations).length > 0) {
    response.auditAnnotations = verdict.auditAnnotations;
  }
  return { apiVersion: ADMISSION_API_VERSION, kind: ADMISSION_KIND, response };
}

const groupVersionKind = {
  type: 'object',
  required: ['group', 'version', 'kind'],
  properties: { group: { type: 'string' }, version: { type: 'string' }, kind: { type: 'string' } },
} as const;

const groupVersionResource = {
  type: 'object',
  required: ['group', 'version', 'resource'],
  properties: { group: { type: 'string' }, version: { type: 'string' }, resource: { type: 'string' } },
} as const;

/** The envelope fields the webhook relies on; everything else passes through untouched. */
export const admissionReviewSchema = {
  type: 'object',
  required: ['apiVersion', 'kind', 'request'],
  properties: {
    apiVersion: { const: ADMISSION_API_VERSION },
    kind: { const: ADMISSION_KIND },
    request: {
      type: 'object',
      required: ['uid', 'kind', 'resource', 'operation', 'userInfo'],
      properties: {
        uid: { type: 'string', minLength: 1 },
        kind: groupVersionKind,
        resource: groupVersionResource,
        requestKind: groupVersionKind,
        subResource: { type: 'string' },
        name: { type: 'string' },
        namespace: { type: 'string' },
        operation: { enum: ['CREATE', 'UPDATE', 'DELETE', 'CONNECT'] },
        userInfo: {
          type: 'object',
          properties: {
            username: { type: 'string' },
            uid: { type: 'string' },
            groups: { type: 'array', items: { type: 'string' } },
          },
        },
        object: { type: ['object', 'null'] },
        oldObject: { type: ['object', 'null'] },
        dryRun: { type: 'boolean' },
        options: { type: ['object', 'null'] },
      },
    },
  },
} as const;

const ajv = new Ajv({ allErrors: true, strict: true });
const validateEnvelope = ajv.compile<{ apiVersion: string; kind: string; request: AdmissionRequest }>(
  admissionReviewSchema,
);

export type EnvelopeCheck = { ok: true; request: AdmissionRequest } | { ok: false; uid: string; problems: string[] };

/** Checks a parsed body against the envelope schema; problems name the field and what was wrong. */
export function checkAdmissionReview(body: unknown): EnvelopeCheck {
  if (validateEnvelope(body)) return { ok: true, request: body.request };
  const uid = uidOf(body);
  const problems = [...new Set((validateEnvelope.errors ?? []).map((error) => describeProblem(error, body)))];
  return { ok: false, uid, problems };
}

/** request.uid when it is a string, so even a rejected review can be correlated. */
export function uidOf(body: unknown): string {
  if (!isObject(body) || !isObject(body.request)) return '';
  return typeof body.request.uid === 'string' ? body.request.uid : '';
}

function describeProblem(error: ErrorObject, body: unknown): string {
  const path = fieldName(error.instancePath);
  const found = (): unknown => valueAt(body, error.instancePath);
  switch (error.keyword) {
    case 'required': {
      const missing = String((error.params as { missingProperty: string }).missingProperty);
      return `${path ? `${path}.` : ''}${missing} is missing`;
    }
    case 'const': {
      const { allowedValue } = error.params as { allowedValue: unknown };
      return `${path} must be ${JSON.stringify(allowedValue)}, got ${shown(found())}`;
    }
    case 'enum': {
      const { allowedValues } = error.params as { allowedValues: unknown[] };
      return `${path} must be one of ${allowedValues.join(', ')}, got ${shown(found())}`;
    }
    case 'type': {
      const { type } = error.params as { type: string | string[] };
      return `${path || 'the body'} must be ${describeType(type)}, got ${typeName(found())}`;
    }
    case 'minLength':
      return `${path} must not be empty`;
    default:
      return `${path || 'the body'} ${error.message ?? 'is invalid'}`;
  }
}

/** `/request/kind` -> `request.kind`. */
function fieldName(instancePath: string): string {
  return instancePath
    .split('/')
    .slice(1)
    .map((part) => part.replaceAll('~1', '/').replaceAll('~0', '~'))
    .join('.');
}

function valueAt(body: unknown, instancePath: string): unknown {
  let value = body;
  for (const part of instancePath.split('/').slice(1)) {
    if (!isObject(value)) return undefined;
    value = value[part.replaceAll('~1', '/').replaceAll('~0', '~')];
  }
  return value;
}

// Only identifier-like strings ("admission.k8s.io/v1beta1", "v1", "Pod", "PATCH") are quoted back;
// anything else, digits included, may be content that must not be echoed or logged.
function shown(value: unknown): string {
  if (
    typeof value === 'string' &&
    value.length <= 40 &&
    /^(?:[A-Za-z]+(\.[a-z0-9-]+)*(\/v[0-9a-z]+)?|v\d+[a-z0-9]*)$/.test(value)
  )
    return JSON.stringify(value);
  return typeName(value);
}

function typeName(value: unknown): string {
  if (value === null) return 'null';
  if (Array.isArray(value)) return 'an array';
  if (typeof value === 'object') return 'an object';
  if (typeof value === 'string') return 'a string';
  return `a ${typeof value}`;
}

function describeType(type: string | string[]): string {
  const names = Array.isArray(type) ? type : [type];
  return names
    .map((name) =>
      name === 'null'
        ? 'null'
        : name === 'object'
          ? 'an object'
          : name === 'array'
            ? 'an array'
            : name === 'integer'
              ? 'an integer'
              : `a ${name}`,
    )
    .join(' or ');
}

function isObject(value: unknown): value is Record<string, unknown> {
  return typeof value === 'object' && value !== null && !Array.isArray(value);
}
