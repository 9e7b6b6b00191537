# syntax=docker/dockerfile:1
# The ledger's one binary in a small image: built with the Rust toolchain, run on
# distroless (glibc, CA certificates, no shell, no package manager) as a non-root user.
#
#   docker build -t escrow-ledger .
#   docker compose up -d          # Postgres + NATS JetStream + the ledger (docker-compose.yml)

FROM rust:1.95-bookworm AS build
WORKDIR /src
COPY . .
# Cache mounts keep the registry and target directory between builds; the binary is
# copied out of the cached target directory so the next stage can see it.
RUN --mount=type=cache,target=/usr/local/cargo/registry \
    --mount=type=cache,target=/src/target \
    cargo build --release --locked -p api --bin escrow \
    && cp target/release/escrow /usr/local/bin/escrow

FROM gcr.io/distroless/cc-debian12:nonroot
COPY --from=build /usr/local/bin/escrow /usr/local/bin/escrow
ENV HOST=0.0.0.0 \
    PORT=8080 \
    HEALTHCHECK_ADDR=127.0.0.1:8080 \
    LOG_FORMAT=json
EXPOSE 8080
# `escrow healthcheck` asks GET /api/v1/ready (Postgres and NATS reachable) without curl.
HEALTHCHECK --interval=10s --timeout=6s --start-period=20s --retries=3 \
    CMD ["/usr/local/bin/escrow", "healthcheck"]
USER nonroot
ENTRYPOINT ["/usr/local/bin/escrow"]
# `serve` applies the migrations before it serves.
CMD ["serve"]
