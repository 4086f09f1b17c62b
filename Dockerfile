# The `eye` binary in a small image: `docker build -t the-eye .`
FROM rust:1.95-bookworm AS build
WORKDIR /src
COPY . .
RUN cargo build --release --locked -p eye-cli --bin eye

FROM debian:bookworm-slim
RUN apt-get update && apt-get install -y --no-install-recommends ca-certificates \
    && rm -rf /var/lib/apt/lists/* && useradd --system --uid 10001 eye
COPY --from=build /src/target/release/eye /usr/local/bin/eye
USER eye
ENTRYPOINT ["eye"]
