# MLflow's scoring server for the `mlflow` runtime (custom models), with scikit-learn,
# skops and XGBoost, built offline for the local cluster's real node (and usable on any
# cluster as the runtime's image):
#
#   hack/docker mlflow-image     # -> modelport.local/mlflow:<version>
#
# The build context (made by hack/docker) holds only wheels/ (mlflow-skinny and the
# frameworks of docker/mlflow-requirements.txt, with everything they need) and debs/
# (libgomp1, the OpenMP runtime XGBoost links against, which Debian's minimal base
# lacks). No index and no registry are used inside the build.
#
# The operator runs MLflow's scoring app under uvicorn (what `mlflow models serve
# --env-manager local` runs, without its wrapper: see operator/modelport/runtimes/mlflow.py)
# and, for registered and s3:// models, `mlflow artifacts download` in an init container;
# both commands come from the venv first on PATH. A model needing more packages: build
# FROM this image and `pip install` them into /opt/mlflow.
ARG BASE_IMAGE=modelport.local/debian-python:bookworm

FROM ${BASE_IMAGE} AS build
ARG MLFLOW_VERSION
ENV PIP_NO_INDEX=1 PIP_NO_CACHE_DIR=1 PIP_DISABLE_PIP_VERSION_CHECK=1
COPY wheels /wheels
COPY requirements.txt /requirements.txt
RUN python3 -m venv /opt/mlflow \
 && /opt/mlflow/bin/pip install --find-links /wheels \
      "mlflow-skinny==${MLFLOW_VERSION}" -r /requirements.txt \
 && find /opt/mlflow -name '__pycache__' -prune -exec rm -rf {} + \
 && /opt/mlflow/bin/python -m compileall -q /opt/mlflow/lib

FROM ${BASE_IMAGE}
COPY debs /tmp/debs
RUN dpkg -i /tmp/debs/*.deb && rm -rf /tmp/debs
COPY --from=build /opt/mlflow /opt/mlflow
ENV PATH=/opt/mlflow/bin:/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin \
    PYTHONUNBUFFERED=1 \
    PYTHONDONTWRITEBYTECODE=1 \
    HOME=/tmp \
    MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR=false
# Numeric and non-root, like the project image: the restricted Pod Security level.
USER 65532:65532
WORKDIR /tmp
EXPOSE 8000
ENTRYPOINT []
CMD ["mlflow", "models", "serve", "--help"]
