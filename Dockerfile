# syntax=docker/dockerfile:1
# The Storefront image: `docker build -t storefront:0.1.0 .` (or `podman build`).
#
# The runtime stage's base (a test on a machine that cannot pull builds a local one; see
# ci/image.sh).
ARG RUNTIME_BASE=gcr.io/distroless/cc-debian12:nonroot

# Build stage: the release binary without the `demo` feature (no s3-mock, no s3s inside), from
# the locked dependency versions.
FROM docker.io/library/rust:1.95-bookworm AS build
WORKDIR /src
COPY . .
RUN cargo build --release --locked -p storefront --no-default-features \
 && install -m 0755 target/release/storefront /storefront

# Runtime stage: glibc and libgcc only (distroless "cc"), no shell, no package manager; the
# non-root user 65532 that deploy/kubernetes runs it as. Configuration and secrets are
# mounted (read-only root filesystem); the proxy writes nothing but stdout and stderr.
FROM ${RUNTIME_BASE}
COPY --from=build /storefront /usr/local/bin/storefront
USER 65532:65532
EXPOSE 9000 9090
ENTRYPOINT ["/usr/local/bin/storefront"]
CMD ["run", "--config", "/etc/storefront/config/storefront.toml"]
