"""The kind target: the Helm release ``flashsale`` in a kind cluster, reached through the
Traefik ingress on the host port kind maps (``k8s/kind-config.yaml``)."""

from __future__ import annotations

import os
import time

from kubernetes import client, config
from kubernetes.stream import stream

from e2e.targets import Target, Timeouts
from service.throwaway import wait_until

RELEASE = "flashsale"
API = "flashsale-api"
WORKER = "flashsale-worker"


def _selector(component: str) -> str:
    return f"app.kubernetes.io/instance={RELEASE},app.kubernetes.io/component={component}"


def _ready(pod: client.V1Pod) -> bool:
    conditions = pod.status.conditions or []
    alive = pod.metadata.deletion_timestamp is None and pod.status.phase == "Running"
    return alive and any(c.type == "Ready" and c.status == "True" for c in conditions)


class KindTarget(Target):
    # KEDA polls, the HPA syncs every 15 s and pods pull, schedule and start: minutes, not seconds.
    timeouts = Timeouts(settle=240, scale_up=240, scale_down=420)

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

    def _pods(self, component: str) -> list[client.V1Pod]:
        return self.core.list_namespaced_pod(self.namespace, label_selector=_selector(component)).items

    def _ready_pods(self, component: str) -> list[client.V1Pod]:
        return sorted((p for p in self._pods(component) if _ready(p)), key=lambda p: p.metadata.name)

    def _ready_replicas(self, deployment: str) -> int:
        status = self.apps.read_namespaced_deployment_status(deployment, self.namespace).status
        return status.ready_replicas or 0

    def api_replicas(self) -> int:
        return self._ready_replicas(API)

    def worker_replicas(self) -> int:
        # The ReplicaSet counts no pod that is terminating, so a scaled-in worker stops counting
        # when it gets SIGTERM, as a local one does.
        return self._ready_replicas(WORKER)

    def worker_bounds(self) -> tuple[int, int]:
        scaled = self.custom.list_namespaced_custom_object(
            "keda.sh", "v1alpha1", self.namespace, "scaledobjects"
        )
        for item in scaled["items"]:
            spec = item["spec"]
            if spec["scaleTargetRef"]["name"] == WORKER:
                # KEDA's defaults when the chart leaves them out.
                return spec.get("minReplicaCount", 0), spec.get("maxReplicaCount", 100)
        raise LookupError(f"no ScaledObject targets {WORKER} in {self.namespace}")

    def seed(self, stock: int) -> None:
        pod = self._ready_pods("api")[0].metadata.name
        session = stream(
            self.core.connect_get_namespaced_pod_exec,
            pod,
            self.namespace,
            container="api",
            command=["flashsale", "seed", "--stock", str(stock)],
            stdout=True,
            stderr=True,
            stdin=False,
            tty=False,
            _preload_content=False,
        )
        session.run_forever(timeout=60)
        output = session.read_all()
        code = session.returncode
        session.close()
        if code != 0:
            raise RuntimeError(f"flashsale seed --stock {stock} in {pod} exited {code}: {output}")

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

    def diagnostics(self) -> str:
        lines = [time.strftime("%H:%M:%S")]
        for deployment in (API, WORKER):
            status = self.apps.read_namespaced_deployment_status(deployment, self.namespace).status
            lines.append(f"{deployment}: replicas {status.replicas} ready {status.ready_replicas}")
        events = self.core.list_namespaced_event(self.namespace).items[-30:]
        lines += [f"{e.last_timestamp} {e.involved_object.name}: {e.reason} {e.message}" for e in events]
        return "\n".join(lines)
