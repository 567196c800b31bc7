// Default settings come from the contract; names expand per release and read back from a name.
import t from 'tap';
import { contract, expandName } from '../../src/contract.js';
import { defaultGuardSettings, releaseFromName, releaseNames } from '../../src/admission/settings.js';

t.test('defaults are the contract', async (t) => {
  t.strictSame(
    { ...defaultGuardSettings, forceMigrationDisabled: [...defaultGuardSettings.forceMigrationDisabled], injectCredentials: [...defaultGuardSettings.injectCredentials] },
    {
      postgresqlSecretTemplate: contract.names.postgresqlSecret,
      postgresqlPvcTemplate: contract.names.postgresqlPvc,
      redisHostTemplate: contract.names.redisMaster,
      redisPort: contract.redisPort,
      redisSecretTemplate: contract.names.redisSecret,
      redisSecretKey: contract.secretKeys.redisPassword,
      forceMigrationDisabled: contract.podRules.forceMigrationDisabled,
      injectCredentials: contract.podRules.injectCredentials,
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
  t.equal(releaseNames({ ...defaultGuardSettings, redisHostTemplate: 'redis.{release}.svc' }, 'a').redisHost, 'redis.a.svc');
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
