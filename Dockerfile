# One image for both Modelport commands: `modelport operator` and `modelport gateway`.
# The packaging issue turns this into a multi-stage build; for now it installs the
# package onto a Python base given by a build argument.
ARG BASE_IMAGE=python:3.12-slim
FROM ${BASE_IMAGE}
WORKDIR /src
COPY pyproject.toml README.md ./
COPY operator ./operator
RUN pip install --no-cache-dir . && rm -rf /src
USER 65532:65532
ENTRYPOINT ["modelport"]
CMD ["--help"]
