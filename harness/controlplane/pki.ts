// The control plane's certificates, made with openssl as envtest makes them: a serving certificate
// for 127.0.0.1 (through the project's certs/generate.sh), a client CA with an admin certificate
// in system:masters, and the service-account signing key.
import { execFileSync } from 'node:child_process';
import { mkdirSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { repoRoot } from '../binaries.js';

const openssl = (args: string[], cwd: string): void => {
  execFileSync('openssl', args, { cwd, stdio: ['ignore', 'ignore', 'pipe'] });
};

/** Runs certs/generate.sh: DIR/ca.crt, ca.key, tls.crt, tls.key with SANs localhost and 127.0.0.1. */
export function generateServingCert(dir: string, service: string, namespace: string): ServingCert {
  execFileSync(
    'bash',
    [join(repoRoot, 'certs/generate.sh'), '--out', dir, '--service', service, '--namespace', namespace],
    { stdio: ['ignore', 'ignore', 'pipe'] },
  );
  return { dir, caFile: join(dir, 'ca.crt'), certFile: join(dir, 'tls.crt'), keyFile: join(dir, 'tls.key') };
}

export interface ServingCert {
  dir: string;
  caFile: string;
  certFile: string;
  keyFile: string;
}

export interface ControlPlanePki {
  serving: ServingCert;
  clientCaFile: string;
  adminCertFile: string;
  adminKeyFile: string;
  serviceAccountKeyFile: string;
  serviceAccountPublicKeyFile: string;
}

/** A client CA (kept in DIR) can sign more users later with `issueClientCert`. */
export function issueClientCert(dir: string, user: string, groups: string[]): { certFile: string; keyFile: string } {
  const key = `${user.replace(/[^a-z0-9-]/gi, '_')}.key`;
  const crt = key.replace(/\.key$/, '.crt');
  const csr = key.replace(/\.key$/, '.csr');
  const ext = key.replace(/\.key$/, '.ext');
  const subject = [...groups.map((g) => `/O=${g}`), `/CN=${user}`].join('');
  openssl(['ecparam', '-name', 'prime256v1', '-genkey', '-noout', '-out', key], dir);
  openssl(['req', '-new', '-key', key, '-subj', subject, '-out', csr], dir);
  writeFileSync(
    join(dir, ext),
    'basicConstraints=critical,CA:FALSE\nkeyUsage=critical,digitalSignature\nextendedKeyUsage=clientAuth\n',
  );
  openssl(
    [
      'x509',
      '-req',
      '-in',
      csr,
      '-CA',
      'client-ca.crt',
      '-CAkey',
      'client-ca.key',
      '-CAcreateserial',
      '-days',
      '7',
      '-sha256',
      '-extfile',
      ext,
      '-out',
      crt,
    ],
    dir,
  );
  return { certFile: join(dir, crt), keyFile: join(dir, key) };
}

export function generateControlPlanePki(dir: string): ControlPlanePki {
  mkdirSync(dir, { recursive: true });
  const serving = generateServingCert(join(dir, 'serving'), 'kubernetes', 'default');
  openssl(['ecparam', '-name', 'prime256v1', '-genkey', '-noout', '-out', 'client-ca.key'], dir);
  openssl(
    [
      'req',
      '-x509',
      '-new',
      '-key',
      'client-ca.key',
      '-sha256',
      '-days',
      '7',
      '-subj',
      '/CN=dify-guard-test-client-ca',
      '-addext',
      'basicConstraints=critical,CA:TRUE',
      '-addext',
      'keyUsage=critical,keyCertSign,cRLSign',
      '-out',
      'client-ca.crt',
    ],
    dir,
  );
  const admin = issueClientCert(dir, 'admin', ['system:masters']);
  openssl(['ecparam', '-name', 'prime256v1', '-genkey', '-noout', '-out', 'sa-signer.key'], dir);
  openssl(['ec', '-in', 'sa-signer.key', '-pubout', '-out', 'sa-signer.pub'], dir);
  return {
    serving,
    clientCaFile: join(dir, 'client-ca.crt'),
    adminCertFile: admin.certFile,
    adminKeyFile: admin.keyFile,
    serviceAccountKeyFile: join(dir, 'sa-signer.key'),
    serviceAccountPublicKeyFile: join(dir, 'sa-signer.pub'),
  };
}
