# The ropenope image: the Ray head and GPU workers, the MLflow server and
# optuna-dashboard all run from it (docker-compose.yml); PostgreSQL uses the official
# postgres image with deploy/postgres.sh.
#
# BASE_IMAGE must be a CUDA build of the torch version pinned in pyproject.toml
# (pytorch/pytorch tags read <torch>-cuda<version>-cudnn<version>-runtime), or pip
# replaces it. RAY_VERSION should be the Ray your submitting machine has
# (`ray --version`): the Jobs API and the uploaded code run best on one version.
ARG BASE_IMAGE=pytorch/pytorch:2.13.0-cuda12.8-cudnn9-runtime
FROM ${BASE_IMAGE}

ARG RAY_VERSION=2.60.0
ARG OPTUNA_DASHBOARD_VERSION=0.21.0
ENV PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    RAY_USAGE_STATS_ENABLED=0

WORKDIR /opt/ropenope
COPY pyproject.toml README.md ./
COPY space ./space
COPY search ./search
COPY workers ./workers
COPY tracking ./tracking
COPY configs ./configs
COPY deploy ./deploy

# ray[default] brings the dashboard and the Jobs API; the project itself is installed
# (not editable) so `ropenope` works in the image without any uploaded code.
RUN python -m pip install \
        "ray[default,tune]==${RAY_VERSION}" \
        "optuna-dashboard==${OPTUNA_DASHBOARD_VERSION}" \
        ".[export]" "mlflow[auth]" \
    && python -c "import torch, ray, optuna, mlflow, psycopg; print('torch', torch.__version__, 'cuda', torch.version.cuda, 'ray', ray.__version__)"

# Every service runs as this user, never as root; the folders its named volumes mount
# over are made here with its ownership, which a new volume takes over.
RUN useradd --create-home --uid 1000 --user-group ropenope \
    && mkdir -p /data/runs /data/mlflow-artifacts /data/mlflow-auth /data/gpu-claims \
    && chown -R ropenope:ropenope /data
USER ropenope

CMD ["ropenope", "--help"]
