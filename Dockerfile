# dify-guard admission webhook: the compiled TypeScript on Node 24 LTS, production dependencies only,
# numeric non-root user, nothing written at run time (runs with a read-only root filesystem).
# Here, with no registry: scripts/image/build.sh (podman, from a locally assembled base image).
# Elsewhere: docker build --build-arg VERSION=<package.json version> -t dify-guard/dify-guard:<that version> .
#
# A TLS-intercepting proxy's CA for reaching the npm registry, if one is needed, comes in as the
# build secret `npm_ca` (--secret id=npm_ca,src=FILE): it is used by npm ci and stays out of every layer.
ARG BASE_IMAGE=node:24-bookworm-slim

# npm quiet and the lock file in place, for the two stages below that install from it.
FROM ${BASE_IMAGE} AS lockfile
ENV npm_config_update_notifier=false npm_config_fund=false npm_config_audit=false
WORKDIR /src
COPY package.json package-lock.json ./

# Compiles src/ (and chart/files/contract.json, which src/contract.ts imports) into dist/.
FROM lockfile AS build
# Only the `node` devDependency has an install script: it downloads Node again, which this base
# already has, so scripts are skipped and its bin link (to the binary never fetched) is removed.
RUN --mount=type=secret,id=npm_ca,required=false \
    if [ -s /run/secrets/npm_ca ]; then export NODE_EXTRA_CA_CERTS=/run/secrets/npm_ca; fi; \
    npm ci --ignore-scripts && rm -f node_modules/.bin/node
COPY tsconfig.json tsconfig.build.json ./
COPY chart/files/contract.json chart/files/contract.json
COPY src src
RUN npm run build

# Production dependencies alone (--omit=dev never fetches the `node` package, and none has a script),
# less their type declarations and source maps, which nothing loads at run time (about 45 MB).
FROM lockfile AS deps
RUN --mount=type=secret,id=npm_ca,required=false \
    if [ -s /run/secrets/npm_ca ]; then export NODE_EXTRA_CA_CERTS=/run/secrets/npm_ca; fi; \
    npm ci --omit=dev --ignore-scripts && \
    find node_modules -type f \( -name '*.d.ts' -o -name '*.d.mts' -o -name '*.d.cts' -o -name '*.map' \) -delete

FROM ${BASE_IMAGE} AS runtime
# No package manager at run time: nothing here installs anything, and an intruder should not either.
RUN rm -rf /usr/local/lib/node_modules/npm /usr/local/lib/node_modules/corepack /opt/yarn-* \
      /usr/local/bin/npm /usr/local/bin/npx /usr/local/bin/corepack /usr/local/bin/yarn /usr/local/bin/yarnpkg
ENV NODE_ENV=production
WORKDIR /app
# Everything stays owned by root and read-only to the process: it cannot rewrite its own code.
COPY package.json ./
COPY --from=deps /src/node_modules node_modules
COPY --from=build /src/dist dist
# The tag, the chart's appVersion and package.json's version are one number; build.sh passes it.
ARG VERSION=0.1.0
ARG REVISION=unknown
LABEL org.opencontainers.image.title="dify-guard" \
      org.opencontainers.image.description="Admission webhook that enforces the Dify Helm chart's operating rules: no self-migration, no literal passwords, no PostgreSQL password change under an existing PVC" \
      org.opencontainers.image.version="${VERSION}" \
      org.opencontainers.image.revision="${REVISION}" \
      org.opencontainers.image.licenses="Apache-2.0" \
      org.opencontainers.image.base.name="node:24-bookworm-slim"
# 65532 is the conventional "nonroot" id (distroless); numeric so runAsNonRoot can verify it.
USER 65532:65532
# 8443: HTTPS admission endpoints; 8080: /healthz, /readyz, /metrics.
EXPOSE 8443 8080
# node is PID 1 and handles SIGTERM itself (graceful drain); no shell in between to swallow it.
# A 4 MiB young generation: V8 would grow it to 32 MiB semi-spaces under load, ~50-60 MiB more RSS
# to save ~5 us of scavenging per request and with longer pauses. It does not cap the heap, so
# 3 MiB reviews still fit. npm run bench starts dify-guard with the flags of this line.
CMD ["node", "--max-semi-space-size=4", "dist/src/main.js"]
