# The controller image: ghcr.io/sluice-dev/sluice:<version> (deploy/ and the Helm chart use it).
#   docker build -t ghcr.io/sluice-dev/sluice:0.1.0 .
# Never built in this repository's CI or tests: they run the controller in-process against a
# local control plane, and the machines they run on have no container engine or registry. So this
# stays minimal: one static binary on distroless.

# A static binary: musl is Alpine's own target, and the C in ring builds with musl-dev's gcc.
FROM rust:1.95-alpine AS build
RUN apk add --no-cache musl-dev
WORKDIR /src
# Only what the workspace is made of (every member must exist for cargo to load it), not target/.
COPY Cargo.toml Cargo.lock ./
COPY analysis analysis
COPY api api
COPY examples/demo-app examples/demo-app
COPY kubectl-sluice kubectl-sluice
COPY rollout-controller rollout-controller
COPY tests tests
COPY traffic traffic
RUN cargo build --locked --release -p rollout-controller \
    && cp target/release/rollout-controller /rollout-controller

FROM gcr.io/distroless/static:nonroot
COPY --from=build /rollout-controller /rollout-controller
# distroless's `nonroot` (65532), numeric so that the kubelet can check runAsNonRoot.
USER 65532:65532
EXPOSE 8080 9090
ENTRYPOINT ["/rollout-controller"]
