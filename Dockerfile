# The calico-lens image the Helm chart runs (agent and inventory). Not built in CI here (no
# container engine on the build machines): `docker build -t ghcr.io/calico-lens/calico-lens:0.1.0 .`
FROM python:3.11-slim
WORKDIR /src
COPY pyproject.toml README.md ./
COPY exporter ./exporter
RUN pip install --no-cache-dir . && rm -rf /src
WORKDIR /
USER 65534
ENTRYPOINT ["calico-lens"]
