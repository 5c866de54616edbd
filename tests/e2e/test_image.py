"""The image `make image` builds, run by a real container runtime (podman with runc) exactly as the
Helm chart runs it: the agent container's securityContext, host namespaces, volumes, environment,
memory limit and arguments are read from the rendered chart and turned into `podman run` flags,
nothing added by hand (only what this VM needs of any container: the runc runtime and ulimits root
may set here). Each source the chart can give the agent then has to work inside it: Felix's records
on its socket, real kernel lines from /dev/kmsg, Forward records from a client on the node."""

from __future__ import annotations

import base64
import subprocess
import tempfile
import time
import tomllib
import uuid
from pathlib import Path

import pytest
import requests
from calico_lens.demo.felix import StandInFelix, flow
from calico_lens.demo.node import kmsg_write
from calico_lens.metrics import names

from tests.forward_client import ForwardClient, entry
from tests.helpers import ROOT, samples
from tests.kubeapi import FakeKubeAPI
from tests.prom import free_port
from tests.unit.test_helm import find, render

VERSION = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["version"]
IMAGE = f"ghcr.io/calico-lens/calico-lens:{VERSION}"
ARCHIVE = ROOT / "build" / f"calico-lens-{VERSION}.oci.tar"
# What this VM needs of every container, whatever it runs: crun refuses its hybrid cgroups, and
# root lacks CAP_SYS_RESOURCE to raise podman's default ulimits.
RUNTIME = ["--runtime", "runc", "--ulimit", "nofile=20000", "--ulimit", "nproc=32768"]
LINES = names.INPUT_LINES + "_total"


@pytest.fixture(scope="module")
def image() -> str:
    """`make image`'s script, then the archive loaded into podman."""
    p = subprocess.run(["bash", str(ROOT / "scripts" / "image.sh")], capture_output=True, text=True, timeout=900)
    assert p.returncode == 0, p.stdout + p.stderr
    assert f"wrote build/calico-lens-{VERSION}.oci.tar" in p.stdout and ARCHIVE.is_file()
    p = subprocess.run(["podman", "load", "-q", "-i", str(ARCHIVE)], capture_output=True, text=True, timeout=300)
    assert p.returncode == 0 and IMAGE in p.stdout, p.stdout + p.stderr
    return IMAGE


def test_image_metadata(image: str) -> None:
    out = subprocess.run(["podman", "image", "inspect", image, "--format",
                          "{{.Config.User}}|{{json .Config.Entrypoint}}|{{json .Labels}}"],
                         capture_output=True, text=True, check=True).stdout.strip()
    user, entrypoint, labels = out.split("|", 2)
    assert user == "65534:65534" and entrypoint == '["/usr/bin/python3","-m","calico_lens"]'
    for key in ("version", "source", "licenses"):
        assert f'"org.opencontainers.image.{key}"' in labels
    version = subprocess.run(["podman", "run", "--rm", *RUNTIME, image, "--version"], capture_output=True,
                             text=True, timeout=60)
    assert version.stdout.strip() == f"calico-lens {VERSION} (C scanner, C snapshot YAML reader)", \
        version.stdout + version.stderr


class Kubelet:
    """What the kubelet gives a pod that mounts its service account token: the API server's address
    in the environment and the token with the cluster CA under /var/run/secrets. The API server is
    the in-test one (tests/kubeapi.py), here over TLS as in a cluster."""

    def __init__(self, work: Path) -> None:
        self.dir = work / "serviceaccount"
        self.dir.mkdir(parents=True)
        subprocess.run(["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1", "-subj",
                        "/CN=kubernetes", "-addext", "subjectAltName=IP:127.0.0.1", "-keyout", str(work / "api.key"),
                        "-out", str(self.dir / "ca.crt")], check=True, capture_output=True, timeout=60)
        (self.dir / "token").write_text("test-token")
        (self.dir / "namespace").write_text("observability")
        self.api = FakeKubeAPI(tls=(str(self.dir / "ca.crt"), str(work / "api.key")))
        self.api.__enter__()

    def flags(self) -> list[str]:
        port = self.api.server.server_address[1]
        return ["-e", "KUBERNETES_SERVICE_HOST=127.0.0.1", "-e", f"KUBERNETES_SERVICE_PORT={port}",
                "-v", f"{self.dir}:/var/run/secrets/kubernetes.io/serviceaccount:ro"]

    def close(self) -> None:
        self.api.__exit__()


class ChartAgent:
    """The chart's agent container, run by podman with the chart's own settings."""

    KNOWN_SC: frozenset[str] = frozenset({"privileged", "runAsUser", "readOnlyRootFilesystem",
                                          "allowPrivilegeEscalation", "capabilities"})

    def __init__(self, image: str, *chart_args: str, host_paths: dict[str, str] | None = None,
                 unless: str = "") -> None:
        """``unless``: one flag the chart's settings gave that this run leaves out (to show why it is there)."""
        self.docs = render("stock-values.yaml", *chart_args)
        self.work = Path(tempfile.mkdtemp(prefix="cl-img-"))
        self.name = f"cl-agent-{uuid.uuid4().hex[:8]}"
        self.flags, self.metrics_port = self._flags(host_paths or {})
        self.kubelet: Kubelet | None = None
        if self.pod_spec.get("automountServiceAccountToken", True):
            assert self.pod_spec.get("hostNetwork"), "the in-test API server is reachable on the host's network only"
            self.kubelet = Kubelet(self.work)
            self.flags += self.kubelet.flags()
        if unless:
            assert unless in self.flags, (unless, self.flags)
            self.flags.remove(unless)
        self.proc = subprocess.run(["podman", "run", "-d", "--name", self.name, *RUNTIME, *self.flags, image,
                                    *self.container["args"]], capture_output=True, text=True, timeout=120)
        assert self.proc.returncode == 0, self.proc.stderr
        self.url = f"http://127.0.0.1:{self.metrics_port}"

    def _flags(self, host_paths: dict[str, str]) -> tuple[list[str], int]:
        ds = find(self.docs, "DaemonSet", "-agent")
        spec = self.pod_spec = ds["spec"]["template"]["spec"]
        c = self.container = spec["containers"][0]
        sc = c.get("securityContext", {})
        assert set(sc) <= self.KNOWN_SC, f"securityContext keys this test cannot translate: {set(sc) - self.KNOWN_SC}"
        flags: list[str] = []
        if sc.get("privileged"):
            flags.append("--privileged")
        if "runAsUser" in sc:
            flags += ["--user", str(sc["runAsUser"])]
        if sc.get("readOnlyRootFilesystem"):
            flags.append("--read-only")
        if sc.get("allowPrivilegeEscalation") is False:
            flags += ["--security-opt", "no-new-privileges"]
        for cap in sc.get("capabilities", {}).get("drop", []):
            flags += ["--cap-drop", cap]
        for cap in sc.get("capabilities", {}).get("add", []):
            flags += ["--cap-add", cap]
        if spec.get("hostPID"):
            flags += ["--pid", "host"]
        port = next(p["containerPort"] for p in c["ports"] if p["name"] == "metrics")
        if spec.get("hostNetwork"):
            flags += ["--network", "host"]
            metrics_port = port
        else:
            metrics_port = free_port()
            flags += ["-p", f"127.0.0.1:{metrics_port}:{port}"]
        if "memory" in c.get("resources", {}).get("limits", {}):
            flags += ["--memory", c["resources"]["limits"]["memory"].replace("Mi", "m").replace("Gi", "g")]
        volumes = {v["name"]: v for v in spec["volumes"]}
        for m in c["volumeMounts"]:
            v = volumes[m["name"]]
            ro = ":ro" if m.get("readOnly") else ""
            if "hostPath" in v:
                path = host_paths.get(v["hostPath"]["path"], v["hostPath"]["path"])
                if v["hostPath"].get("type") == "DirectoryOrCreate":  # as the kubelet does
                    Path(path).mkdir(parents=True, exist_ok=True)
                flags += ["-v", f"{path}:{m['mountPath']}{ro}"]
            elif "configMap" in v:
                data = find(self.docs, "ConfigMap", v["configMap"]["name"].rsplit("-", 1)[-1])["data"]
                d = self.work / m["name"]
                d.mkdir()
                for k, text in data.items():
                    (d / k).write_text(text)
                flags += ["-v", f"{d}:{m['mountPath']}:ro"]
            else:
                raise AssertionError(f"volume {v} is not a hostPath or a ConfigMap: this test cannot translate it")
        for e in c.get("env", []):
            if "value" in e:
                flags += ["-e", f"{e['name']}={e['value']}"]
            else:
                ref = e["valueFrom"]["secretKeyRef"]
                secret = next(d for d in self.docs if d["kind"] == "Secret" and d["metadata"]["name"] == ref["name"])
                flags += ["-e", f"{e['name']}={base64.b64decode(secret['data'][ref['key']]).decode()}"]
        return flags, metrics_port

    def get(self, path: str, timeout: float = 30.0) -> requests.Response:
        end = time.monotonic() + timeout
        while True:
            try:
                return requests.get(self.url + path, timeout=5)
            except requests.RequestException:
                if time.monotonic() > end or not self.running():
                    raise AssertionError(f"agent container not answering {path}: {self.logs()}") from None
                time.sleep(0.3)

    def wait_ready(self, timeout: float = 60.0) -> requests.Response:
        """/readyz until 200 (the first Kubernetes sync, the sources started) or the timeout."""
        end = time.monotonic() + timeout
        r = self.get("/readyz")
        while r.status_code != 200 and time.monotonic() < end:
            time.sleep(0.3)
            r = self.get("/readyz")
        return r

    def running(self) -> bool:
        out = subprocess.run(["podman", "inspect", "-f", "{{.State.Running}}", self.name], capture_output=True,
                             text=True)
        return out.stdout.strip() == "true"

    def logs(self) -> str:
        return subprocess.run(["podman", "logs", self.name], capture_output=True, text=True).stderr[-3000:]

    def counted(self, source: str, result: str = "parsed") -> float:
        fams = samples(self.get("/metrics").text)
        return sum(v for lab, v in fams.get(LINES, []) if lab == {"source": source, "result": result})

    def wait_counted(self, source: str, want: float, timeout: float = 20.0) -> float:
        end = time.monotonic() + timeout
        while (got := self.counted(source)) < want and time.monotonic() < end:
            time.sleep(0.3)
        return got

    def close(self) -> None:
        subprocess.run(["podman", "rm", "-f", "-t", "2", self.name], capture_output=True, timeout=60)
        if self.kubelet is not None:
            self.kubelet.close()

    def __enter__(self) -> ChartAgent:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def test_felix_source_as_the_chart_runs_it(image: str, tmp_path: Path) -> None:
    """The chart's default: Felix's socket directory is the only host path, no capability is added."""
    flows_dir = tmp_path / "flows"
    with ChartAgent(image, host_paths={"/var/run/calico/flows": str(flows_dir)}) as agent:
        assert "--privileged" not in agent.flags and "--cap-add" not in agent.flags
        assert agent.get("/healthz").status_code == 200
        sock = flows_dir / "flows.sock"
        end = time.monotonic() + 20
        while not sock.exists() and time.monotonic() < end:
            time.sleep(0.2)
        assert sock.exists(), agent.logs()
        felix = StandInFelix(str(sock))
        try:
            felix.send([flow(("pod", "shop", "web-7d9c5b8f4-*"), ("pod", "shop", "db-5f6d7c8b9-*"), 5432, "allow",
                             "dst", 1_800_000_000, connections=(3, 2, 1))])
        finally:
            felix.close()
        assert agent.wait_counted("felix", 1) == 1
        fams = samples(agent.get("/metrics").text)
        started = [v for lab, v in fams[names.CONNS_STARTED + "_total"] if lab["destination_workload"] == "db"]
        assert started == [3.0]


def test_kmsg_source_as_the_chart_runs_it_reads_real_kernel_lines(image: str) -> None:
    prefix = "img" + uuid.uuid4().hex[:6]
    with ChartAgent(image, "-f", str(ROOT / "helm/calico-lens/ci/kmsg-values.yaml"), "--set", f"logPrefix={prefix}",
                    "--set", f"agent.port={free_port()}") as agent:
        ready = agent.wait_ready()
        assert ready.status_code == 200, f"{ready.status_code} {ready.text}\n{agent.logs()}"
        time.sleep(0.5)
        for i in range(25):
            kmsg_write(f"{prefix}: IN=cali1a2b OUT=eth0 SRC=10.244.1.{i + 1} DST=10.96.0.10 LEN=60 PROTO=TCP "
                       f"SPT={40000 + i} DPT=443 SYN")
        assert agent.wait_counted("kmsg", 25) == 25


def test_kmsg_without_the_device_allowed_makes_the_agent_not_ready(image: str) -> None:
    """The chart's kmsg settings without `privileged` (as the chart had them): a bind-mounted /dev/kmsg
    is not in the container's device allow-list, so open() fails with EPERM even with CAP_SYSLOG, and
    the agent says so on /readyz instead of reporting ready."""
    with ChartAgent(image, "-f", str(ROOT / "helm/calico-lens/ci/kmsg-values.yaml"),
                    "--set", f"agent.port={free_port()}", unless="--privileged") as agent:
        end = time.monotonic() + 30
        r = agent.get("/readyz")
        while not (r.status_code == 503 and "/dev/kmsg" in r.text) and time.monotonic() < end:
            time.sleep(0.3)
            r = agent.get("/readyz")
        assert r.status_code == 503 and "/dev/kmsg" in r.text, f"{r.status_code} {r.text}"


def test_forward_receiver_as_the_chart_runs_it(image: str) -> None:
    """With Fluent Bit on, the agent shares the node's network and takes Forward on 127.0.0.1 with the
    chart's generated shared key."""
    fport, mport = free_port(), free_port()
    with ChartAgent(image, "--set", "fluentbit.enabled=true", "--set", f"agent.forwardPort={fport}",
                    "--set", f"agent.port={mport}") as agent:
        assert "--network" in agent.flags
        key = next(f.split("=", 1)[1] for f in agent.flags if f.startswith("CALICO_LENS_FORWARD_SHARED_KEY="))
        assert agent.wait_ready().status_code == 200, agent.logs()
        end = time.monotonic() + 20
        while True:
            try:
                client = ForwardClient(f"127.0.0.1:{fport}", shared_key=key)
                break
            except OSError:
                assert time.monotonic() < end, agent.logs()
                time.sleep(0.3)
        try:
            lines = [f"calico-packet: IN=cali1 OUT=eth0 SRC=10.244.1.{i + 1} DST=10.96.0.10 LEN=60 PROTO=TCP "
                     f"SPT={30000 + i} DPT=443 SYN" for i in range(40)]
            client.forward("calico.kernel", [entry({"log": line}) for line in lines], chunk="c1")
            assert client.ack() == {"ack": "c1"}
        finally:
            client.close()
        assert agent.wait_counted("forward", 40) == 40
