// helm's own folders (cache, config, data) under a test's private folder, never the user's.
import { join } from 'node:path';

/** The environment for the real helm, its folders under `home`; `extra` adds KUBECONFIG, HOME and the like. */
export function helmEnv(home: string, extra: NodeJS.ProcessEnv = {}): NodeJS.ProcessEnv {
  return {
    ...process.env,
    ...extra,
    HELM_CACHE_HOME: join(home, 'helm/cache'),
    HELM_CONFIG_HOME: join(home, 'helm/config'),
    HELM_DATA_HOME: join(home, 'helm/data'),
  };
}
