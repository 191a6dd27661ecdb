# syntax=docker/dockerfile:1.7
# pointercache: one image for both roles, `pointercache init` (init container) and
# `pointercache sidecar`. It runs as UID/GID 10001 with a read-only root filesystem and writes
# only to its volumes: the shared volume, the node cache and a /tmp emptyDir.
#
#   docker build -t ghcr.io/pointercache/pointercache:0.1.0 .
#
# The base is pinned by tag and by the digest of its multi-architecture index; bump both together.
# uv (builder only) is pinned by the hashes of its wheels in requirements/uv.txt.
ARG PYTHON_IMAGE=python:3.11.14-slim-bookworm@sha256:65a93d69fa75478d554f4ad27c85c1e69fa184956261b4301ebaf6dbb0a3543d

# --- builder: a virtual environment with the pinned dependencies, then the project -------------
FROM ${PYTHON_IMAGE} AS builder
WORKDIR /src
# uv from PyPI, pinned by version and by the sha256 of every wheel (requirements/uv.txt), into the
# digest-pinned base: no second image to pin. It stays in the builder.
COPY requirements/uv.txt requirements/uv.txt
RUN pip install --no-cache-dir --require-hashes -r requirements/uv.txt
ENV UV_COMPILE_BYTECODE=1 \
    UV_LINK_MODE=copy \
    UV_NO_CACHE=1 \
    UV_PYTHON_DOWNLOADS=never \
    VIRTUAL_ENV=/opt/venv
RUN python -m venv --without-pip /opt/venv
# Dependencies first: this layer is rebuilt only when the lock changes, not on every code change.
COPY requirements/runtime.txt requirements/runtime.txt
RUN uv pip install --python /opt/venv/bin/python -r requirements/runtime.txt
# The project itself, non-editable and without dependencies (they are all pinned above).
COPY pyproject.toml README.md ./
COPY pointercache pointercache
COPY initcontainer initcontainer
COPY sidecar sidecar
COPY pointercache_cli pointercache_cli
RUN uv pip install --python /opt/venv/bin/python --no-deps . \
    && /opt/venv/bin/pointercache --version

# --- runtime: the slim base and the virtual environment, nothing else --------------------------
FROM ${PYTHON_IMAGE} AS runtime
ARG VERSION=0.1.0
LABEL org.opencontainers.image.title="pointercache" \
      org.opencontainers.image.description="Init container and sidecar that make the model registry a soft dependency of model-serving pods" \
      org.opencontainers.image.version="${VERSION}" \
      org.opencontainers.image.licenses="Apache-2.0" \
      org.opencontainers.image.source="https://github.com/pointercache/pointercache" \
      org.opencontainers.image.url="https://github.com/pointercache/pointercache" \
      org.opencontainers.image.base.name="docker.io/library/python:3.11.14-slim-bookworm"
RUN groupadd --system --gid 10001 pointercache \
    && useradd --system --uid 10001 --gid 10001 --home-dir /tmp --no-create-home \
       --shell /usr/sbin/nologin pointercache
COPY --from=builder /opt/venv /opt/venv
# HOME=/tmp: the only writable place besides the volumes (an emptyDir in the pod). Byte code is
# precompiled in the builder, so nothing tries to write __pycache__ at run time.
ENV PATH=/opt/venv/bin:$PATH \
    HOME=/tmp \
    PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1
WORKDIR /
USER 10001:10001
ENTRYPOINT ["pointercache"]
CMD ["--help"]
