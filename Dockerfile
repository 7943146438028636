# sluice as a container: a static binary on a distroless base.
FROM golang:1.26-bookworm AS build
WORKDIR /src
# The modules first, so that a source change does not download them again.
# go.mod replaces mochi with the copy in third_party/: it must be here too.
COPY go.mod go.sum ./
COPY third_party/ third_party/
RUN go mod download
COPY . .
ARG VERSION=dev
RUN CGO_ENABLED=0 go build -trimpath -ldflags "-s -w -X main.version=${VERSION}" -o /out/sluice ./cmd/sluice && mkdir -p /out/data

FROM gcr.io/distroless/static-debian12:nonroot
COPY --from=build /out/sluice /usr/local/bin/sluice
# The journals and the broker's state; owned by the user sluice runs as.
COPY --from=build --chown=65532:65532 /out/data /var/lib/sluice
EXPOSE 1883 9880
USER nonroot
VOLUME /var/lib/sluice
ENTRYPOINT ["/usr/local/bin/sluice"]
CMD ["run", "-c", "/etc/sluice/docker/sluice.yaml"]
