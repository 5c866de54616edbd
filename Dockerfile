# The calico-lens image for those who build with Docker: the same content as `make image` (which builds
# it with mmdebstrap and buildah, no Docker engine needed): Python 3.11, the packages in /opt/calico-lens
# with the C line scanner and snapshot YAML reader compiled in the first stage (libyaml linked statically) (the image has no compiler), a non-root user.
#   docker build -t ghcr.io/calico-lens/calico-lens:0.1.0 .
FROM python:3.11-slim AS wheels
RUN apt-get update && apt-get install -y --no-install-recommends gcc libc6-dev libyaml-dev && rm -rf /var/lib/apt/lists/*
WORKDIR /src
COPY pyproject.toml setup.py README.md ./
COPY exporter ./exporter
RUN pip wheel --no-cache-dir --wheel-dir /wheels .

FROM python:3.11-slim
COPY --from=wheels /wheels /wheels
# Fails the build if a C part did not compile (the agent would run, several times slower).
RUN pip install --no-cache-dir --no-deps --target /opt/calico-lens /wheels/*.whl \
    && rm -rf /wheels /opt/calico-lens/bin \
    && PYTHONPATH=/opt/calico-lens python3 -m calico_lens --version | grep -q "C scanner, C snapshot YAML reader"
ENV PYTHONPATH=/opt/calico-lens PYTHONDONTWRITEBYTECODE=1 PYTHONUNBUFFERED=1
LABEL org.opencontainers.image.title=calico-lens \
      org.opencontainers.image.version=0.1.0 \
      org.opencontainers.image.source=https://github.com/calico-lens/calico-lens \
      org.opencontainers.image.licenses=Apache-2.0
USER 65534:65534
WORKDIR /
ENTRYPOINT ["python3", "-m", "calico_lens"]
