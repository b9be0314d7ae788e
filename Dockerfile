# election-operator image: a static-enough Rust binary on distroless, as non-root.
# Build: docker build -t ghcr.io/election-dev/election-operator:0.1.0 .
FROM rust:1.95-bookworm AS build
WORKDIR /src
# Dependencies first, so source edits do not refetch the crate graph.
COPY Cargo.toml Cargo.lock ./
COPY e2e/Cargo.toml e2e/Cargo.toml
COPY src src
COPY e2e/src e2e/src
COPY crds crds
RUN cargo build --release --locked --bin election-operator

# cc: glibc and libgcc, which the binary links; no shell, no package manager.
FROM gcr.io/distroless/cc-debian12:nonroot
COPY --from=build /src/target/release/election-operator /election-operator
# The restricted Pod Security profile needs a numeric non-root user.
USER 65532:65532
EXPOSE 8080 8081
ENTRYPOINT ["/election-operator"]
