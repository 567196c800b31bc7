// Default settings come from the contract; names expand per release and read back from a name.
import t from 'tap';
import { contract, expandName } from '../../src/contract.js';
import { defaultGuardSettings, releaseFromName, releaseNames } from '../../src/admission/settings.js';
import { difyImagePatternSource, isDifyImage } from '../../src/admission/dify-containers.js';

t.test('defaults are the contract', async (t) => {
  t.strictSame(
    {
      ...defaultGuardSettings,
      forceMigrationDisabled: [...defaultGuardSettings.forceMigrationDisabled],
      injectCredentials: [...defaultGuardSettings.injectCredentials],
      difyImages: [...defaultGuardSettings.difyImages],
    },
    {
      postgresqlSecretTemplate: contract.names.postgresqlSecret,
      postgresqlPvcTemplate: contract.names.postgresqlPvc,
      redisHostTemplate: contract.names.redisMaster,
      redisPort: contract.redisPort,
      redisSecretTemplate: contract.names.redisSecret,
      redisSecretKey: contract.secretKeys.redisPassword,
      forceMigrationDisabled: contract.podRules.forceMigrationDisabled,
      injectCredentials: contract.podRules.injectCredentials,
      difyImages: contract.difyImages,
      templatePolicy: 'warn',
    },
  );
  t.ok(Object.isFrozen(defaultGuardSettings), 'shared defaults cannot be edited by a caller');
  t.ok(Object.isFrozen(defaultGuardSettings.injectCredentials));
});

t.test('releaseNames expands every template for one release', async (t) => {
  t.strictSame(releaseNames(defaultGuardSettings, 'prod'), {
    postgresqlSecret: expandName(contract.names.postgresqlSecret, 'prod'),
    postgresqlPvc: expandName(contract.names.postgresqlPvc, 'prod'),
    redisHost: expandName(contract.names.redisMaster, 'prod'),
    redisSecret: expandName(contract.names.redisSecret, 'prod'),
  });
  t.equal(
    releaseNames({ ...defaultGuardSettings, redisHostTemplate: 'redis.{release}.svc' }, 'a').redisHost,
    'redis.a.svc',
  );
});

t.test('releaseFromName reads the release back, or says it cannot', async (t) => {
  const template = contract.names.postgresqlSecret;
  for (const release of ['dify', 'prod-eu', 'a']) {
    t.equal(releaseFromName(template, expandName(template, release)), release, release);
  }
  t.equal(releaseFromName(contract.names.postgresqlPvc, expandName(contract.names.postgresqlPvc, 'x-y')), 'x-y');
  t.equal(releaseFromName(template, 'postgresql'), undefined, 'no room for a release');
  t.equal(releaseFromName(template, expandName(template, '')), undefined, 'empty release');
  t.equal(releaseFromName(template, 'dify-redis'), undefined, 'another suffix');
  t.equal(releaseFromName('{release}-{release}', 'a-a'), undefined, 'ambiguous template');
  t.equal(releaseFromName('fixed-name', 'fixed-name'), undefined, 'template without {release}');
});

t.test('Dify images match on the repository path, whatever the registry, tag or digest', async (t) => {
  const matches = [
    'langgenius/dify-api',
    'langgenius/dify-api:1.11.4',
    'docker.io/langgenius/dify-api:1.11.4',
    'registry.example.com:5000/langgenius/dify-plugin-daemon:0.5.2-local',
    'harbor.corp/dockerhub-proxy/langgenius/dify-api@sha256:abc',
    'langgenius/dify-api:1.11.4@sha256:abc',
  ];
  const others = [
    'langgenius/dify-web:1.11.4',
    'langgenius/dify-api-extra:1',
    'evil.io/notlanggenius/dify-api:1',
    'langgenius/dify-sandbox:0.2.12',
    'fluent/fluent-bit:3',
    'langgenius/dify-api/extra:1',
    '',
  ];
  for (const image of matches) t.ok(isDifyImage(image, defaultGuardSettings), image);
  for (const image of others) t.notOk(isDifyImage(image, defaultGuardSettings), image || '(empty)');
  t.notOk(isDifyImage(42, defaultGuardSettings), 'not a string');
  t.equal(
    difyImagePatternSource(['a.b/c']),
    '^(.*/)?(a\\.b/c)(:[^/@]*)?(@.+)?$',
    'dots are quoted, as regexQuoteMeta does in the chart',
  );
});
