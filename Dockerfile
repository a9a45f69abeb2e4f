# One image for every Modelport command: `modelport operator`, `gateway`, `api`, `console`.
# It has the `tracing` extra (the OpenTelemetry SDK and OTLP exporter, about 8 MB with
# protobuf), which the gateway imports only when a collector is configured.
#
#   docker build -t modelport/modelport:0.1.0 .
#
# BASE_IMAGE must provide Python >= 3.11 with the venv module; both stages use
# it so the virtual environment's interpreter path matches. Without a registry,
# hack/docker makes a Debian base locally and builds with PIP_NO_INDEX=1 from
# wheels it puts in .local/wheels.
ARG BASE_IMAGE=python:3.12-slim

FROM ${BASE_IMAGE} AS build
ARG PIP_NO_INDEX=
ENV PIP_NO_INDEX=${PIP_NO_INDEX} \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1
COPY . /src
RUN python3 -m venv /opt/modelport \
 && /opt/modelport/bin/pip install --find-links /src/.local/wheels "/src[tracing]" \
 && /opt/modelport/bin/pip uninstall --yes pip \
 && find /opt/modelport -name '__pycache__' -prune -exec rm -rf {} + \
 && /opt/modelport/bin/python -m compileall -q /opt/modelport/lib

FROM ${BASE_IMAGE}
COPY --from=build /opt/modelport /opt/modelport
ENV PATH=/opt/modelport/bin:/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin \
    PYTHONUNBUFFERED=1 \
    PYTHONDONTWRITEBYTECODE=1
# A numeric non-root user, so the restricted Pod Security level's runAsNonRoot
# check passes without a runAsUser in the pod spec. It also gets a passwd entry:
# Kopf (getpass.getuser()) and other libraries look the uid up by name.
RUN groupadd --gid 65532 modelport \
 && useradd --uid 65532 --gid 65532 --no-create-home --home-dir /nonexistent \
      --shell /usr/sbin/nologin modelport
USER 65532:65532
WORKDIR /tmp
EXPOSE 8080
ENTRYPOINT ["modelport"]
CMD ["--help"]
