# syntax=docker/dockerfile:1
#
# ollama-guard container image.
#
#   docker build -t ollama-guard:0.1.0 .
#   docker run --rm -p 11434:11434 -p 127.0.0.1:9464:9464 ollama-guard:0.1.0 \
#       serve --listen 0.0.0.0:11434 --admin-listen 0.0.0.0:9464 --upstream http://ollama:11434
#
# Only Cargo.toml, Cargo.lock, src/ and crates/ (the workspace's ollama-sim, which the `demo`
# and `simulator` commands embed) are copied, so a local target/ directory is never part of
# the image (.dockerignore keeps it out of the build context too).

# ---- build ------------------------------------------------------------------------------
FROM rust:1-bookworm AS builder
WORKDIR /src
COPY Cargo.toml Cargo.lock ./
COPY src ./src
COPY crates ./crates
# The cache mounts keep the registry and incremental artefacts between builds (BuildKit);
# the binary is copied out of the cached target dir because cache mounts are not layers.
RUN --mount=type=cache,target=/usr/local/cargo/registry \
    --mount=type=cache,target=/usr/local/cargo/git \
    --mount=type=cache,target=/src/target \
    cargo build --release --locked \
 && install -D -m 0755 target/release/ollama-guard /out/ollama-guard

# ---- runtime ----------------------------------------------------------------------------
FROM debian:bookworm-slim
RUN apt-get update \
 && apt-get install -y --no-install-recommends ca-certificates \
 && rm -rf /var/lib/apt/lists/*

# Fixed numeric UID/GID so Kubernetes `runAsNonRoot` can verify it and volumes can be
# pre-chowned (deploy/kubernetes uses 10001 too).
RUN groupadd --system --gid 10001 ollama-guard \
 && useradd --system --uid 10001 --gid 10001 --no-create-home --home-dir /nonexistent \
        --shell /usr/sbin/nologin ollama-guard \
 && install -d -o 10001 -g 10001 -m 0750 /var/lib/ollama-guard /var/log/ollama-guard \
 && install -d -m 0755 /etc/ollama-guard

COPY --from=builder /out/ollama-guard /usr/local/bin/ollama-guard

USER 10001:10001
# Bans persist here when the config sets state_dir = "/var/lib/ollama-guard".
VOLUME ["/var/lib/ollama-guard"]

# 11434: the client-facing proxy (Ollama's port). 9464: /metrics, /healthz, /readyz,
# /api/bans — publish it only to a trusted network (the compose file binds it to 127.0.0.1).
EXPOSE 11434 9464

# The slim image has no curl/wget: the binary probes itself. `healthcheck` GETs /readyz on the
# admin listener (200 when the upstream Ollama answered the last probe, else 503) and exits 0
# or 1 within 3 s. Override --admin if the admin listener is moved off port 9464.
# Orchestrators may probe the admin port directly too: GET /healthz (liveness), GET /readyz.
HEALTHCHECK --interval=30s --timeout=5s --start-period=10s --retries=3 \
    CMD ["ollama-guard", "healthcheck", "--admin", "http://127.0.0.1:9464"]

# SIGTERM (Docker's default stop signal) drains in-flight requests for the grace period
# (timeouts.grace_period, 30 s by default): give `docker stop` a --time above it.
ENTRYPOINT ["ollama-guard"]
CMD ["serve", "--listen", "0.0.0.0:11434", "--admin-listen", "0.0.0.0:9464", "--upstream", "http://ollama:11434"]
