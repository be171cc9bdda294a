"""The kind target: the Helm release ``flashsale`` in a kind cluster, reached through the
Traefik ingress on the host port kind maps (``k8s/kind-config.yaml``).

What a client cannot do is done inside the cluster: ``flashsale`` and short Python scripts run
in an API pod (its image, its settings, its Redis) through the Kubernetes exec API, and
throwaway probe pods test what the NetworkPolicies let through.
"""

from __future__ import annotations

import os
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager

import msgspec
from kubernetes import client, config
from kubernetes.stream import stream

from e2e.targets import HELD, HOLD_LIMIT_SECONDS, Target, Timeouts
from service.cli.dev_servers import wait_until
from service.sale.backlog import Backlog

RELEASE = "flashsale"
API = "flashsale-api"
WORKER = "flashsale-worker"

# Run in an API pod, where FLASHSALE_REDIS_URL is the release's Redis.
_HOLD = f"""
import os
from redis import Redis
from rq.suspension import suspend
suspend(Redis.from_url(os.environ["FLASHSALE_REDIS_URL"]), {HOLD_LIMIT_SECONDS})
"""
_RESUME = """
import os
from redis import Redis
from rq.suspension import resume
resume(Redis.from_url(os.environ["FLASHSALE_REDIS_URL"]))
"""
_WORKER_STATES = """
import json, os
from redis import Redis
from rq import Worker
from service.sale.order_jobs import order_queue
queue = order_queue(Redis.from_url(os.environ["FLASHSALE_REDIS_URL"]))
print(json.dumps([[w.hostname, w.get_state()] for w in Worker.all(queue=queue)]))
"""
_BACKLOG = """
import sys, urllib.request
print(urllib.request.urlopen(f"http://127.0.0.1:{sys.argv[1]}/backlog", timeout=10).read().decode())
"""

PROBE_REACHED, PROBE_BLOCKED, PROBE_UNRESOLVED = 0, 1, 2
_PROBE = f"""
import socket, sys, time
host, port, seconds = sys.argv[1], int(sys.argv[2]), float(sys.argv[3])
try:
    socket.getaddrinfo(host, port)
except OSError:
    sys.exit({PROBE_UNRESOLVED})
deadline = time.monotonic() + seconds
while True:
    try:
        socket.create_connection((host, port), timeout=3).close()
        sys.exit({PROBE_REACHED})
    except OSError:
        if time.monotonic() > deadline:
            sys.exit({PROBE_BLOCKED})
        time.sleep(1)
"""
"""Exits PROBE_REACHED once a TCP connection to host:port opens, PROBE_BLOCKED if none does
within the given seconds (a policy drops the SYN: connections time out), PROBE_UNRESOLVED if
the name does not resolve (which would prove nothing about a policy)."""


def _selector(component: str) -> str:
    return f"app.kubernetes.io/instance={RELEASE},app.kubernetes.io/component={component}"


def _ready(pod: client.V1Pod) -> bool:
    conditions = pod.status.conditions or []
    alive = pod.metadata.deletion_timestamp is None and pod.status.phase == "Running"
    return alive and any(c.type == "Ready" and c.status == "True" for c in conditions)


class KindTarget(Target):
    # KEDA polls, the HPA syncs every 15 s and pods pull, schedule and start: minutes, not seconds.
    # Traefik's dial timeout (30 s) to an address no pod holds any more.
    timeouts = Timeouts(settle=240, scale_up=240, scale_down=420, lost_after_kill=35)

    def __init__(self) -> None:
        try:
            config.load_kube_config()
        except config.ConfigException:
            config.load_incluster_config()
        self.namespace = os.environ.get("E2E_NAMESPACE", "flashsale")
        self.base_url = os.environ.get("E2E_BASE_URL", "http://localhost:8080").rstrip("/")
        self.core = client.CoreV1Api()
        self.apps = client.AppsV1Api()
        self.custom = client.CustomObjectsApi()
        self.networking = client.NetworkingV1Api()

    def _pods(self, component: str) -> list[client.V1Pod]:
        return self.core.list_namespaced_pod(self.namespace, label_selector=_selector(component)).items

    def _ready_pods(self, component: str) -> list[client.V1Pod]:
        return sorted((p for p in self._pods(component) if _ready(p)), key=lambda p: p.metadata.name)

    def _ready_replicas(self, deployment: str) -> int:
        status = self.apps.read_namespaced_deployment_status(deployment, self.namespace).status
        return status.ready_replicas or 0

    def _in_api_pod(self, *command: str) -> str:
        """Run ``command`` in the ``api`` container of a ready API pod; its standard output."""
        pod = self._ready_pods("api")[0].metadata.name
        session = stream(
            self.core.connect_get_namespaced_pod_exec,
            pod,
            self.namespace,
            container="api",
            command=list(command),
            stdout=True,
            stderr=True,
            stdin=False,
            tty=False,
            _preload_content=False,
        )
        session.run_forever(timeout=60)
        stdout, stderr, code = session.read_stdout(), session.read_stderr(), session.returncode
        session.close()
        if code != 0:
            raise RuntimeError(f"{' '.join(command)[:200]} in {pod} exited {code}: {stdout}{stderr}")
        return stdout

    def _python_in_api_pod(self, script: str, *args: str) -> str:
        return self._in_api_pod("python", "-c", script, *args)

    def api_replicas(self) -> int:
        return self._ready_replicas(API)

    def worker_replicas(self) -> int:
        # The ReplicaSet counts no pod that is terminating, so a scaled-in worker stops counting
        # when it gets SIGTERM, as a local one does.
        return self._ready_replicas(WORKER)

    def _scaled_object_spec(self) -> dict:
        scaled = self.custom.list_namespaced_custom_object(
            "keda.sh", "v1alpha1", self.namespace, "scaledobjects"
        )
        for item in scaled["items"]:
            if item["spec"]["scaleTargetRef"]["name"] == WORKER:
                return item["spec"]
        raise LookupError(f"no ScaledObject targets {WORKER} in {self.namespace}")

    def worker_bounds(self) -> tuple[int, int]:
        spec = self._scaled_object_spec()
        # KEDA's defaults when the chart leaves them out.
        return spec.get("minReplicaCount", 0), spec.get("maxReplicaCount", 100)

    def orders_per_worker(self) -> float:
        for trigger in self._scaled_object_spec()["triggers"]:
            if trigger["metadata"].get("valueLocation") == "undecided_orders":
                return float(trigger["metadata"]["targetValue"])
        raise LookupError(f"the ScaledObject of {WORKER} has no trigger on undecided_orders")

    def backlog(self) -> Backlog:
        # From inside an API pod, as KEDA asks the Service: /backlog is not behind the ingress.
        deployment = self.apps.read_namespaced_deployment(API, self.namespace)
        (api,) = (c for c in deployment.spec.template.spec.containers if c.name == "api")
        (port,) = (p.container_port for p in api.ports if p.name == "http")
        return msgspec.json.decode(self._python_in_api_pod(_BACKLOG, str(port)), type=Backlog)

    def hold_workers(self) -> None:
        self._python_in_api_pod(_HOLD)
        wait_until(self._all_held, 60, "every worker pod held", interval=1)

    def _all_held(self) -> bool:
        # An RQ worker registers under its host name, the pod's name; a pod killed earlier may
        # still be listed (until its registration expires), a running one must be held.
        states = msgspec.json.decode(self._python_in_api_pod(_WORKER_STATES))
        held = {hostname for hostname, state in states if state == HELD}
        return all(pod.metadata.name in held for pod in self._ready_pods("worker"))

    def release_workers(self) -> None:
        self._python_in_api_pod(_RESUME)

    def seed(self, stock: int) -> None:
        self._in_api_pod("flashsale", "seed", "--stock", str(stock))

    def _kill(self, component: str, deployment: str) -> None:
        victim = self._ready_pods(component)[0].metadata.name
        self.core.delete_namespaced_pod(victim, self.namespace, grace_period_seconds=0)

        def replaced() -> bool:
            names = {p.metadata.name for p in self._pods(component)}
            spec = self.apps.read_namespaced_deployment(deployment, self.namespace).spec.replicas or 0
            return victim not in names and len(self._ready_pods(component)) >= spec

        wait_until(replaced, 180, f"{deployment} ready again after {victim} was killed", interval=1)

    def kill_api_pod(self) -> None:
        self._kill("api", API)

    def kill_worker_pod(self) -> None:
        self._kill("worker", WORKER)

    # What the NetworkPolicies let through (e2e/test_network_policy.py).

    def service_address(self, component: str) -> tuple[str, int]:
        """The cluster-wide name and first port of the release's Service for ``component``."""
        service = self.core.read_namespaced_service(f"{RELEASE}-{component}", self.namespace)
        return f"{service.metadata.name}.{self.namespace}.svc", service.spec.ports[0].port

    def admitted_labels(self, component: str, posing_as: str) -> dict[str, str]:
        """Labels of a pod that ``component``'s NetworkPolicy admits, as the release's
        ``posing_as`` component: the pod selector of its first rule's first peer."""
        policy = self.networking.read_namespaced_network_policy(f"{RELEASE}-{component}", self.namespace)
        selector = policy.spec.ingress[0]._from[0].pod_selector
        labels = dict(selector.match_labels or {})
        for expression in selector.match_expressions or []:
            assert expression.operator == "In" and posing_as in expression.values, expression
            labels[expression.key] = posing_as
        return labels

    @contextmanager
    def scratch_namespace(self) -> Iterator[str]:
        """A namespace of nobody's, deleted afterwards."""
        name = f"e2e-outsider-{uuid.uuid4().hex[:6]}"
        self.core.create_namespace({"metadata": {"name": name}})
        try:
            yield name
        finally:
            self.core.delete_namespace(name)

    def probe(self, namespace: str, labels: dict[str, str], host: str, port: int, seconds: float) -> int:
        """Run ``_PROBE`` against host:port in a new pod with ``labels`` in ``namespace``; its
        exit code. The pod runs the release's own image: kind loaded it on every node, and it
        has Python."""
        deployment = self.apps.read_namespaced_deployment(API, self.namespace)
        (api,) = (c for c in deployment.spec.template.spec.containers if c.name == "api")
        pod = self.core.create_namespaced_pod(
            namespace,
            {
                "metadata": {"generateName": "e2e-probe-", "labels": labels},
                "spec": {
                    "restartPolicy": "Never",
                    "activeDeadlineSeconds": int(seconds) + 120,
                    "automountServiceAccountToken": False,
                    "securityContext": {
                        "runAsNonRoot": True,
                        "runAsUser": 10001,
                        "seccompProfile": {"type": "RuntimeDefault"},
                    },
                    "containers": [
                        {
                            "name": "probe",
                            "image": api.image,
                            "imagePullPolicy": api.image_pull_policy,
                            "command": ["python", "-c", _PROBE, host, str(port), str(seconds)],
                            "securityContext": {
                                "allowPrivilegeEscalation": False,
                                "readOnlyRootFilesystem": True,
                                "capabilities": {"drop": ["ALL"]},
                            },
                            "resources": {"requests": {"cpu": "10m", "memory": "32Mi"}},
                        }
                    ],
                },
            },
        )
        name = pod.metadata.name
        try:
            deadline = time.monotonic() + seconds + 120
            while (pod := self.core.read_namespaced_pod(name, namespace)).status.phase not in {
                "Succeeded",
                "Failed",
            }:
                if time.monotonic() > deadline:
                    raise TimeoutError(f"probe pod {namespace}/{name} still {pod.status.phase}: {pod.status}")
                time.sleep(1)
            (status,) = pod.status.container_statuses
            if status.state.terminated is None:
                raise RuntimeError(f"probe pod {namespace}/{name} ended without running: {pod.status}")
            return status.state.terminated.exit_code
        finally:
            self.core.delete_namespaced_pod(name, namespace, grace_period_seconds=0)

    def diagnostics(self) -> str:
        lines = [time.strftime("%H:%M:%S")]
        for deployment in (API, WORKER):
            status = self.apps.read_namespaced_deployment_status(deployment, self.namespace).status
            lines.append(f"{deployment}: replicas {status.replicas} ready {status.ready_replicas}")
        events = self.core.list_namespaced_event(self.namespace).items[-30:]
        lines += [f"{e.last_timestamp} {e.involved_object.name}: {e.reason} {e.message}" for e in events]
        return "\n".join(lines)
