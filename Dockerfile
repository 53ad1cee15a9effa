# syntax=docker/dockerfile:1
# lariat: multi-stage build → small Debian runtime, non-root.
#
#   docker build -t lariat .
#   docker run -p 8080:8080 -v $PWD/my-lariat.toml:/etc/lariat/lariat.toml:ro \
#     -e OPENAI_API_KEY -e LARIAT_KEY_ALICE lariat
#
# Inside a container lariat must listen on 0.0.0.0, which it only does when
# [[keys]] are configured (see README "Running in Docker").

FROM rust:1-slim-bookworm AS build
WORKDIR /src
# Dependencies first, so source edits do not rebuild them.
COPY Cargo.toml Cargo.lock ./
RUN mkdir -p src bench && echo 'fn main() {}' > src/main.rs && touch src/lib.rs \
    && echo 'fn main() {}' > bench/mock_upstream.rs \
    && cargo build --release --locked --bin lariat \
    && rm -rf src
COPY src ./src
RUN touch src/main.rs src/lib.rs && cargo build --release --locked --bin lariat \
    && strip target/release/lariat

FROM debian:bookworm-slim
RUN apt-get update && apt-get install -y --no-install-recommends ca-certificates \
    && rm -rf /var/lib/apt/lists/* \
    && useradd --system --uid 10001 --home-dir /nonexistent --shell /usr/sbin/nologin lariat
COPY --from=build /src/target/release/lariat /usr/local/bin/lariat
COPY config/lariat.toml /etc/lariat/lariat.toml
ENV LARIAT_CONFIG=/etc/lariat/lariat.toml
USER lariat
EXPOSE 8080
# Liveness: GET /health; readiness: GET /ready (both JSON, no auth).
ENTRYPOINT ["/usr/local/bin/lariat"]
CMD ["serve", "--log-format", "json"]
