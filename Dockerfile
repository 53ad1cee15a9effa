# syntax=docker/dockerfile:1
# lariat: a multi-stage build with two runtime images.
#
#   docker build -t lariat .                      # full (default): uv/uvx + Node/npx
#   docker build --target slim -t lariat:slim .   # slim: no stdio MCP runtimes
#   docker run -p 8080:8080 -e LARIAT_API_KEY=sk-... -e OPENAI_API_KEY lariat
#
# The full image runs stdio MCP servers (`uvx mcp-server-time`, `npx -y
# @modelcontextprotocol/server-filesystem /data`, ...); the slim one only lariat,
# for configs with built-ins, HTTP tools and MCP servers over HTTP. See README,
# "Docker", for sizes and the baked-in config (config/container.toml).

FROM rust:1-slim-bookworm AS build
# The slim image has gcc but not make, which jemalloc's build (the allocator) needs.
RUN apt-get update && apt-get install -y --no-install-recommends make \
    && rm -rf /var/lib/apt/lists/*
WORKDIR /src
# Dependencies first, so source edits do not rebuild them. build.rs compresses the
# tokenizer tables (it needs no source), so it belongs to this layer too.
COPY Cargo.toml Cargo.lock build.rs ./
# The allocator's settings (read when jemalloc is built).
COPY .cargo ./.cargo
RUN mkdir src && echo 'fn main() {}' > src/main.rs && touch src/lib.rs \
    && cargo build --release --locked --bin lariat \
    && rm -rf src
COPY src ./src
# Cargo's release profile already strips the binary.
RUN touch src/main.rs src/lib.rs && cargo build --release --locked --bin lariat

# Only lariat: about 125 MB (Debian slim 75 MB, CA certificates 5 MB, the binary 43 MB).
FROM debian:bookworm-slim AS slim
RUN apt-get update && apt-get install -y --no-install-recommends ca-certificates \
    && rm -rf /var/lib/apt/lists/* \
    && useradd --system --uid 10001 --create-home --home-dir /home/lariat --shell /usr/sbin/nologin lariat
COPY --from=build /src/target/release/lariat /usr/local/bin/lariat
COPY config/container.toml /etc/lariat/lariat.toml
ENV LARIAT_CONFIG=/etc/lariat/lariat.toml
USER lariat
WORKDIR /home/lariat
EXPOSE 8080
# `lariat health` asks /health over a plain socket: no curl in the image.
HEALTHCHECK --interval=15s --timeout=5s --start-period=10s --retries=3 CMD ["lariat", "health"]
ENTRYPOINT ["/usr/local/bin/lariat"]
CMD ["serve", "--log-format", "json"]

# Pinned helper images: the uv binaries and a Node runtime are copied out of them.
FROM ghcr.io/astral-sh/uv:0.9 AS uv
FROM node:22-bookworm-slim AS node

# slim + what stdio MCP servers are launched with: uv/uvx (Python servers; Debian's
# python3 as their interpreter) and Node/npm/npx. About 350 MB; see README.
FROM slim AS full
USER root
RUN apt-get update && apt-get install -y --no-install-recommends python3 \
    && rm -rf /var/lib/apt/lists/*
COPY --from=uv /uv /uvx /usr/local/bin/
COPY --from=node /usr/local/bin/node /usr/local/bin/node
COPY --from=node /usr/local/lib/node_modules/npm /usr/local/lib/node_modules/npm
RUN ln -s ../lib/node_modules/npm/bin/npm-cli.js /usr/local/bin/npm \
    && ln -s ../lib/node_modules/npm/bin/npx-cli.js /usr/local/bin/npx
USER lariat
# uv keeps its settings, cache and tools under $HOME, which lariat passes to stdio
# servers (their environment is otherwise minimal: CONFIG.md, [tools.mcp]), so the
# settings apply to them too: Debian's python3, never a download of another. The
# baked config's `time` server is fetched now, so it starts without a download.
RUN mkdir -p /home/lariat/.config/uv \
    && printf 'python-preference = "only-system"\npython-downloads = "never"\n' > /home/lariat/.config/uv/uv.toml \
    && uvx mcp-server-time --help >/dev/null
