# llama.cpp's OpenAI-compatible server (llama-cpp-python[server]) for the `llamacpp`
# runtime, built offline for the local cluster's real node:
#
#   hack/docker llamacpp-image     # -> modelport.local/llamacpp:<version>
#
# The build context (made by hack/docker) holds only wheels/ (llama-cpp-python from
# hack/build-llamacpp's portable CPU build, and its [server] dependencies) and debs/
# (libgomp1, the OpenMP runtime the ggml CPU backend links against, which Debian's
# minimal base lacks). No index and no registry are used inside the build.
#
# The operator runs `python3 -m llama_cpp.server --model ... --host 0.0.0.0 --port 8000`
# (operator/modelport/runtimes/llamacpp.py); the venv's python3 comes first on PATH.
ARG BASE_IMAGE=modelport.local/debian-python:bookworm

FROM ${BASE_IMAGE} AS build
ARG LLAMA_CPP_PYTHON_VERSION
ENV PIP_NO_INDEX=1 PIP_NO_CACHE_DIR=1 PIP_DISABLE_PIP_VERSION_CHECK=1
COPY wheels /wheels
RUN python3 -m venv /opt/llamacpp \
 && /opt/llamacpp/bin/pip install --find-links /wheels \
      "llama-cpp-python[server]==${LLAMA_CPP_PYTHON_VERSION}" \
 && /opt/llamacpp/bin/pip uninstall --yes pip setuptools \
 && find /opt/llamacpp -name '__pycache__' -prune -exec rm -rf {} + \
 && /opt/llamacpp/bin/python -m compileall -q /opt/llamacpp/lib

FROM ${BASE_IMAGE}
COPY debs /tmp/debs
RUN dpkg -i /tmp/debs/*.deb && rm -rf /tmp/debs
COPY --from=build /opt/llamacpp /opt/llamacpp
ENV PATH=/opt/llamacpp/bin:/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin \
    PYTHONUNBUFFERED=1 \
    PYTHONDONTWRITEBYTECODE=1 \
    HOME=/tmp
# Numeric and non-root, like the project image: the restricted Pod Security level.
USER 65532:65532
WORKDIR /tmp
EXPOSE 8000
ENTRYPOINT []
CMD ["python3", "-m", "llama_cpp.server", "--help"]
