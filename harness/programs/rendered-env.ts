// A container's env as the kubelet would give it, from what `helm template` rendered: secretKeyRefs read
// from the rendered Secrets, and $(NAME) expanded only from names defined earlier in the list (Kubernetes'
// rule; an unknown reference stays as written, `$$` is a literal `$`).
import { kindOf, nameOf, type Container, type Json } from '../helm.js';

export type Env = Record<string, string>;

/** The decoded value of one key of a rendered Secret; throws when it is not rendered. */
export function secretValue(objects: Json[], name: string, key: string): string {
  const secret = objects.find((o) => kindOf(o) === 'Secret' && nameOf(o) === name);
  const encoded = (secret?.data as Record<string, string> | undefined)?.[key];
  if (encoded === undefined) throw new Error(`the chart renders no Secret ${name} with key ${key}`);
  return Buffer.from(encoded, 'base64').toString('utf8');
}

const hasSecretKey = (objects: Json[], name: string, key: string): boolean =>
  objects.some((o) => kindOf(o) === 'Secret' && nameOf(o) === name && Object.hasOwn((o.data ?? {}) as Json, key));

/** Kubernetes' $(VAR) expansion against the names defined so far. */
export function expand(value: string, defined: Env): string {
  return value.replace(/\$\$|\$\(([A-Za-z_][A-Za-z0-9_.-]*)\)/g, (match, name: string | undefined) =>
    match === '$$' ? '$' : name !== undefined && Object.hasOwn(defined, name) ? defined[name]! : match,
  );
}

/** The env of a rendered container, resolved in order. */
export function resolvedEnv(objects: Json[], container: Container): Env {
  const env: Env = {};
  for (const entry of container.env ?? []) {
    const ref = entry.valueFrom?.secretKeyRef;
    if (ref) {
      // An optional reference to a key that is not there leaves the variable unset, as the kubelet does.
      if (ref.optional && !hasSecretKey(objects, ref.name, ref.key)) continue;
      env[entry.name] = secretValue(objects, ref.name, ref.key);
    } else if (entry.valueFrom)
      throw new Error(`${container.name}: ${entry.name} uses a valueFrom these tests cannot resolve`);
    else env[entry.name] = expand(entry.value ?? '', env);
  }
  return env;
}

/** The shell script of a `/bin/sh -c <script>` command or probe. */
export function shellScript(command: unknown): string {
  if (!Array.isArray(command) || command[0] !== '/bin/sh' || command[1] !== '-c' || typeof command[2] !== 'string') {
    throw new Error(`not a /bin/sh -c command: ${JSON.stringify(command)}`);
  }
  return command[2];
}
