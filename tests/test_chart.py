"""The Helm chart, rendered by Helm's engine for every values file in ``charts/flashsale/ci``
(and the kind values), checked against Kubernetes' schemas and for what matters on sale day."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path
from urllib.parse import unquote, urlsplit

import kubernetes_validate
import pytest
from cloudcoil.models.keda.v1alpha1 import ScaledObject
from cloudcoil.models.prometheus_operator.v1 import PodMonitor, ServiceMonitor

from service.core.policies import (
    HEADER_KIND,
    KEY_KINDS,
    LIMIT_NAME,
    MAX_LIMITS_PER_ROUTE,
    MAX_MATCHES_PER_ROUTE,
    MAX_UNITS,
    Mode,
    PolicyError,
    default_policies,
    parse_policies,
)
from service.core.settings import REPO_ROOT, settings_from_env
from tests.support.chart import CHART, CI_VALUES, lint, objects, render, validate_values, values_of

VALUE_FILES = [*CI_VALUES, REPO_ROOT / "k8s" / "values-kind.yaml"]
KUBE_VERSIONS = ["1.30.0", "1.37.0"]  # Chart.yaml's kubeVersion floor, and the newest schemas
CRD_MODELS = {"ScaledObject": ScaledObject, "ServiceMonitor": ServiceMonitor, "PodMonitor": PodMonitor}


def _by_kind(rendered: list[dict], kind: str) -> dict[str, dict]:
    return {o["metadata"]["name"]: o for o in rendered if o["kind"] == kind}


def _pod_specs(rendered: list[dict]) -> dict[str, dict]:
    """Every pod spec the chart makes, by object name: workloads, hook Jobs, test Pods."""
    specs = {}
    for o in rendered:
        if o["kind"] in ("Deployment", "StatefulSet", "Job"):
            specs[o["metadata"]["name"]] = o["spec"]["template"]["spec"]
        elif o["kind"] == "Pod":
            specs[o["metadata"]["name"]] = o["spec"]
    return specs


def _container(rendered: list[dict], deployment: str) -> dict:
    return _by_kind(rendered, "Deployment")[deployment]["spec"]["template"]["spec"]["containers"][0]


@pytest.fixture(scope="module", params=VALUE_FILES, ids=lambda path: path.name)
def values_file(request) -> Path:
    return request.param


def test_each_values_file_passes_the_schema_and_strict_lint(values_file):
    values = values_of(values_file)
    validate_values(values)
    report = lint(values)
    assert report["errors"] == []
    assert [m for m in report["messages"] if m["severity"] >= 2] == [], report["messages"]


@pytest.mark.parametrize("kube_version", KUBE_VERSIONS)
def test_every_rendered_object_is_valid_kubernetes(values_file, kube_version):
    for manifest in objects(values_of(values_file)):
        if manifest["kind"] in CRD_MODELS:
            model = CRD_MODELS[manifest["kind"]].model_validate(manifest)
            # The models ignore unknown fields: a field lost on the round trip was misspelled.
            assert model.model_dump(by_alias=True, exclude_unset=True, mode="json") == manifest
        else:
            kubernetes_validate.validate(manifest, kube_version, strict=True)


def test_probes_point_where_they_should_and_grace_outlasts_shutdown():
    rendered = objects({})
    api = _container(rendered, "flashsale-api")
    assert api["readinessProbe"]["httpGet"] == {"path": "/readyz", "port": "http"}
    assert api["livenessProbe"]["httpGet"] == {"path": "/healthz", "port": "http"}
    assert api["ports"] == [{"name": "http", "containerPort": 8000, "protocol": "TCP"}]
    pre_stop = api["lifecycle"]["preStop"]["sleep"]["seconds"]
    shutdown = int(api["args"][api["args"].index("--shutdown-timeout") + 1])
    api_pod = _by_kind(rendered, "Deployment")["flashsale-api"]["spec"]["template"]["spec"]
    assert api_pod["terminationGracePeriodSeconds"] > pre_stop + shutdown

    assert api["startupProbe"]["httpGet"] == {"path": "/healthz", "port": "http"}

    worker = _container(rendered, "flashsale-worker")
    assert worker["args"] == ["flashsale", "worker"]
    assert worker["startupProbe"]["exec"]["command"] == ["flashsale", "check", "worker"]
    assert worker["ports"] == [{"name": "metrics", "containerPort": 9102, "protocol": "TCP"}]
    assert worker["livenessProbe"]["exec"]["command"] == ["flashsale", "check", "worker"]
    assert "readinessProbe" not in worker
    worker_pod = _by_kind(rendered, "Deployment")["flashsale-worker"]["spec"]["template"]["spec"]
    job_timeout = int(_by_kind(rendered, "ConfigMap")["flashsale"]["data"]["FLASHSALE_JOB_TIMEOUT_SECONDS"])
    assert worker_pod["terminationGracePeriodSeconds"] > job_timeout, "warm shutdown finishes the job"


KEDA = "keda.sh/v1alpha1"
EXTERNAL_METRICS = "external.metrics.k8s.io/v1beta1"
MONITORING = "monitoring.coreos.com/v1"


def _served(*api_versions: str) -> dict:
    """Values that render as a cluster serving these API versions would (helm-python-sdk's
    render has no --api-versions: the chart's capabilities.apiVersions stands in for them)."""
    return {"capabilities": {"apiVersions": list(api_versions)}}


def _worker_autoscaling(rendered: list[dict]) -> str:
    scaled = "flashsale-worker" in _by_kind(rendered, "ScaledObject")
    hpa = "flashsale-worker" in _by_kind(rendered, "HorizontalPodAutoscaler")
    fixed = "replicas" in _by_kind(rendered, "Deployment")["flashsale-worker"]["spec"]
    assert [scaled, hpa, fixed].count(True) == 1, "exactly one way to size the workers"
    return "keda" if scaled else "external" if hpa else "none"


@pytest.mark.parametrize(
    ("served", "chosen"),
    [
        ((), "none"),  # a bare cluster: defaults must install
        ((EXTERNAL_METRICS,), "external"),
        ((KEDA,), "keda"),
        ((KEDA, EXTERNAL_METRICS), "keda"),
    ],
    ids=["bare", "metrics-adapter", "keda", "both"],
)
def test_auto_autoscaling_uses_what_the_cluster_serves_and_notes_say_which(served, chosen):
    values = _served(*served)
    assert _worker_autoscaling(objects(values)) == chosen
    notes = render(values)["flashsale/templates/NOTES.txt"]
    assert f"autoscaling: {chosen} (auto: the cluster serves" in notes, notes


@pytest.mark.parametrize("mode", ["keda", "external", "none"])
@pytest.mark.parametrize("served", [(), (KEDA, EXTERNAL_METRICS)], ids=["bare", "both"])
def test_an_explicit_autoscaling_mode_renders_whatever_the_cluster_serves(mode, served):
    values = _served(*served) | {"worker": {"autoscaling": {"mode": mode}}}
    assert _worker_autoscaling(objects(values)) == mode
    assert f"worker.autoscaling.mode is {mode}" in render(values)["flashsale/templates/NOTES.txt"]


def test_defaults_render_no_object_a_bare_cluster_lacks():
    """Every kind the defaults render is one that Kubernetes itself serves (no CRDs)."""
    core_groups = {"v1", "apps/v1", "batch/v1", "policy/v1", "autoscaling/v2", "networking.k8s.io/v1"}
    assert {o["apiVersion"] for o in objects({})} <= core_groups


@pytest.mark.parametrize(
    ("served", "monitors"), [((), False), ((MONITORING,), True)], ids=["bare", "prometheus-operator"]
)
def test_monitors_follow_the_prometheus_operator_unless_asked(served, monitors):
    rendered = objects(_served(*served))
    assert ("flashsale-api" in _by_kind(rendered, "ServiceMonitor")) is monitors
    assert ("flashsale-worker" in _by_kind(rendered, "PodMonitor")) is monitors
    forced = objects({"metrics": {"serviceMonitor": {"enabled": True}}})
    assert "flashsale-api" in _by_kind(forced, "ServiceMonitor"), "true renders whatever is served"
    off = objects(_served(MONITORING) | {"metrics": {"serviceMonitor": {"enabled": False}}})
    assert not _by_kind(off, "ServiceMonitor")


def test_keda_reads_the_undecided_orders_from_the_api_by_its_cluster_wide_name():
    (only,) = _by_kind(objects(_served(KEDA)), "ScaledObject")["flashsale-worker"]["spec"]["triggers"]
    aged = _served(KEDA) | {"worker": {"autoscaling": {"oldestOrderAgeSeconds": 30}}}
    keda = _by_kind(objects(aged), "ScaledObject")["flashsale-worker"]["spec"]
    orders, age = keda["triggers"]
    assert only == orders, "the age trigger is off unless asked for"
    # KEDA's operator resolves names from its own namespace: only <svc>.<namespace>.svc works.
    url = "http://flashsale-api.flashsale.svc:80/backlog"
    assert orders == {
        "type": "metrics-api",
        "metadata": {
            "url": url,
            "format": "json",
            "valueLocation": "undecided_orders",
            "targetValue": "2000",
            "activationTargetValue": "0",
        },
    }
    assert age["metricType"] == "Value" and age["metadata"]["url"] == url
    assert age["metadata"]["valueLocation"] == "oldest_age_seconds"
    assert age["metadata"]["targetValue"] == "30"
    assert keda["scaleTargetRef"] == {"name": "flashsale-worker"}


def test_the_external_hpa_reads_the_undecided_orders_and_their_age():
    external = objects(_served(EXTERNAL_METRICS) | {"worker": {"autoscaling": {"oldestOrderAgeSeconds": 5}}})
    orders, age = _by_kind(external, "HorizontalPodAutoscaler")["flashsale-worker"]["spec"]["metrics"]
    assert orders["external"]["metric"]["name"] == "flashsale_orders_undecided"
    assert orders["external"]["target"] == {"type": "AverageValue", "averageValue": "2000"}
    assert age["external"]["metric"]["name"] == "flashsale_orders_oldest_undecided_age_seconds"
    assert age["external"]["target"] == {"type": "Value", "value": "5"}


def test_the_signal_names_match_what_the_api_serves():
    """The fields KEDA reads are /backlog's, and the External metrics are ones /metrics serves."""
    import msgspec
    from prometheus_client import REGISTRY

    from service.sale.backlog import Backlog

    aged = {"worker": {"autoscaling": {"oldestOrderAgeSeconds": 5}}}
    keda = _by_kind(objects(_served(KEDA) | aged), "ScaledObject")["flashsale-worker"]["spec"]
    fields = {trigger["metadata"]["valueLocation"] for trigger in keda["triggers"]}
    assert fields == {f.name for f in msgspec.structs.fields(Backlog)}
    hpa = _by_kind(objects(_served(EXTERNAL_METRICS) | aged), "HorizontalPodAutoscaler")["flashsale-worker"]
    served = {metric.name for metric in REGISTRY.collect()}
    for metric in hpa["spec"]["metrics"]:
        assert metric["external"]["metric"]["name"] in served


def test_the_api_hpa_and_pdb_follow_their_values():
    rendered = objects({})
    assert "replicas" not in _by_kind(rendered, "Deployment")["flashsale-api"]["spec"]
    assert "flashsale-api" in _by_kind(rendered, "PodDisruptionBudget")
    single = objects({"api": {"autoscaling": {"enabled": False}, "replicaCount": 1}})
    assert _by_kind(single, "Deployment")["flashsale-api"]["spec"]["replicas"] == 1
    assert "flashsale-api" not in _by_kind(single, "HorizontalPodAutoscaler")
    assert "flashsale-api" not in _by_kind(single, "PodDisruptionBudget"), "a PDB on one pod blocks drains"


def test_migrations_run_after_install_and_before_upgrade_and_seed_only_when_asked():
    jobs = _by_kind(objects({}), "Job")
    assert set(jobs) == {"flashsale-migrate"}
    migrate = jobs["flashsale-migrate"]
    annotations = migrate["metadata"]["annotations"]
    assert annotations["helm.sh/hook"] == "post-install,pre-upgrade", (
        "pre-install could not reach the chart's DB"
    )
    assert annotations["helm.sh/hook-delete-policy"] == "before-hook-creation", "a failed run keeps its logs"
    assert "ttlSecondsAfterFinished" not in migrate["spec"], "a failed run keeps its logs"
    (container,) = migrate["spec"]["template"]["spec"]["containers"]
    assert container["terminationMessagePolicy"] == "FallbackToLogsOnError"
    # Inside Helm's default 5-minute hook timeout, retries and all; each run waits less than that.
    deadline = migrate["spec"]["activeDeadlineSeconds"]
    assert deadline < 300
    assert int(container["args"][container["args"].index("--wait") + 1]) < deadline
    # Argo CD: a Sync hook after the data stores (wave 0) and before the workloads (wave 2),
    # not the PreSync it would map pre-upgrade to (before PostgreSQL exists on a first sync).
    assert annotations["argocd.argoproj.io/hook"] == "Sync"
    assert annotations["argocd.argoproj.io/sync-wave"] == "1"
    for workload in ("flashsale-api", "flashsale-worker"):
        deployment = _by_kind(objects({}), "Deployment")[workload]
        assert deployment["metadata"]["annotations"]["argocd.argoproj.io/sync-wave"] == "2"
    assert migrate["spec"]["template"]["spec"]["containers"][0]["args"][:2] == ["flashsale", "migrate"]

    seeded = _by_kind(objects({"hooks": {"seed": {"enabled": True, "stock": 250}}}), "Job")["flashsale-seed"]
    assert seeded["metadata"]["annotations"]["helm.sh/hook"] == "post-install", (
        "an upgrade must not reset stock"
    )
    assert seeded["metadata"]["annotations"]["argocd.argoproj.io/hook"] == "Skip", "nor a GitOps sync"
    assert int(seeded["metadata"]["annotations"]["helm.sh/hook-weight"]) > int(
        annotations["helm.sh/hook-weight"]
    )
    assert seeded["spec"]["template"]["spec"]["containers"][0]["args"] == [
        "flashsale",
        "seed",
        "--stock",
        "250",
    ]


def test_the_configuration_is_one_flashsale_accepts(values_file):
    rendered = objects(values_of(values_file))
    env = dict(_by_kind(rendered, "ConfigMap")["flashsale"]["data"])
    env |= {"FLASHSALE_REDIS_URL": "redis://r:6379/0", "FLASHSALE_DATABASE_URL": "postgresql://d/db"}
    settings = settings_from_env(env)  # raises, naming the variable, on anything we would refuse
    assert str(settings.worker_heartbeat_file).startswith("/tmp/"), "the only writable path"


RATE_LIMITS = {
    "buy": {
        "limits": [
            {"name": "per-ip", "key": "ip", "capacity": 5, "refill_per_sec": 0.5, "mode": "shadow"},
            {"name": "sale", "key": "global", "capacity": 2000, "refill_per_sec": 500},
        ],
        "overrides": [{"match": "203.0.113.0/24", "capacity": 50, "refill_per_sec": 5}],
        "allow": ["customer:ops"],
    }
}


def test_rate_limits_are_a_watched_configmap_that_changes_no_pod_template():
    pinned = {"redis": {"auth": {"password": "a"}}, "postgresql": {"auth": {"password": "b"}}}
    rendered = objects({**pinned, "rateLimits": RATE_LIMITS})
    document = _by_kind(rendered, "ConfigMap")["flashsale-rate-limits"]["data"]["policies.json"]
    assert parse_policies(document) == parse_policies(json.dumps(RATE_LIMITS)), "a policy flashsale accepts"
    api = _by_kind(rendered, "Deployment")["flashsale-api"]["spec"]["template"]
    container = api["spec"]["containers"][0]
    (path,) = [e["value"] for e in container["env"] if e["name"] == "FLASHSALE_RATE_POLICY_FILE"]
    (mount,) = [m for m in container["volumeMounts"] if m["name"] == "rate-limits"]
    assert path == f"{mount['mountPath']}/policies.json" and "subPath" not in mount, "the kubelet updates it"
    (volume,) = [v for v in api["spec"]["volumes"] if v["name"] == "rate-limits"]
    assert volume["configMap"]["name"] == "flashsale-rate-limits"
    worker = _container(rendered, "flashsale-worker")
    assert "FLASHSALE_RATE_POLICY_FILE" not in {e["name"] for e in worker["env"]}, "workers limit nothing"

    # A new policy changes the ConfigMap and nothing of any pod template: no pod rolls mid-sale.
    tighter = {
        "buy": {**RATE_LIMITS["buy"], "limits": [{**RATE_LIMITS["buy"]["limits"][1], "capacity": 900}]}
    }
    changed = objects({**pinned, "rateLimits": tighter})
    for name in ("flashsale-api", "flashsale-worker"):
        assert _by_kind(changed, "Deployment")[name] == _by_kind(rendered, "Deployment")[name], name
    assert (
        _by_kind(changed, "ConfigMap")["flashsale-rate-limits"]
        != _by_kind(rendered, "ConfigMap")["flashsale-rate-limits"]
    )


def _api_pod_template(values):
    return _by_kind(objects(values), "Deployment")["flashsale-api"]["spec"]["template"]


def test_setting_or_clearing_rate_limits_changes_no_pod_template():
    """The policy file is mounted whether rateLimits is set or not: the first rateLimits of a
    release (or clearing it) rolls no pod, as docs/rate-limiting.md promises."""
    pinned = {"redis": {"auth": {"password": "a"}}, "postgresql": {"auth": {"password": "b"}}}
    without = _api_pod_template(pinned)
    assert without == _api_pod_template({**pinned, "rateLimits": RATE_LIMITS})
    for config in ({"rateCapacity": 9, "rateRefillPerSec": 0.5}, {"ratePolicies": json.dumps(RATE_LIMITS)}):
        assert without == _api_pod_template({**pinned, "config": config}), config


@pytest.mark.parametrize(
    ("values", "expected"),
    [
        ({}, default_policies(5, 1)),
        ({"config": {"rateCapacity": 9, "rateRefillPerSec": 0.5}}, default_policies(9, 0.5)),
        ({"config": {"ratePolicies": json.dumps(RATE_LIMITS)}}, parse_policies(json.dumps(RATE_LIMITS))),
        (  # rateLimits wins over config, as the file wins over FLASHSALE_RATE_POLICIES
            {"rateLimits": RATE_LIMITS, "config": {"ratePolicies": '{"orders": {}}', "rateCapacity": 9}},
            parse_policies(json.dumps(RATE_LIMITS)),
        ),
    ],
    ids=str,
)
def test_the_watched_file_holds_rate_limits_else_config(values, expected):
    rendered = objects(values)
    document = _by_kind(rendered, "ConfigMap")["flashsale-rate-limits"]["data"]["policies.json"]
    assert parse_policies(document) == expected
    env = _by_kind(rendered, "ConfigMap")["flashsale"]["data"]
    assert not {"FLASHSALE_RATE_POLICIES", "FLASHSALE_RATE_CAPACITY", "FLASHSALE_RATE_REFILL_PER_SEC"} & set(
        env
    )


def test_the_client_keep_alive_and_retry_settings_reach_the_pods():
    config = {"clientIpHeader": "forwarded", "rateIpv6Prefix": 56, "jobRetryBackoffSeconds": "0,0,1"}
    env = dict(
        _by_kind(objects({"config": config, "api": {"keepAliveSeconds": 650}}), "ConfigMap")["flashsale"][
            "data"
        ]
    )
    env |= {"FLASHSALE_REDIS_URL": "redis://r:6379/0", "FLASHSALE_DATABASE_URL": "postgresql://d/db"}
    settings = settings_from_env(env)
    assert (settings.client_ip_header, settings.rate_ipv6_prefix) == ("forwarded", 56)
    assert settings.job_retry_backoff_seconds == (0, 0, 1)
    assert settings.keep_alive_seconds == 650


def test_urls_come_from_secrets_and_the_ingress_proxies_are_trusted():
    rendered = objects(values_of(REPO_ROOT / "charts/flashsale/ci/production-like-values.yaml"))
    env = {e["name"]: e for e in _container(rendered, "flashsale-api")["env"]}
    assert env["FLASHSALE_DATABASE_URL"]["valueFrom"]["secretKeyRef"] == {
        "name": "flashsale-db",
        "key": "database-url",
    }
    assert "PGPASSWORD" not in env, "an external database's URL carries its own credentials"
    assert env["FLASHSALE_REDIS_URL"]["valueFrom"]["secretKeyRef"]["name"] == "flashsale-urls"
    assert env["OTEL_EXPORTER_OTLP_ENDPOINT"]["value"] == "http://otel-collector.observability:4318"
    assert _by_kind(rendered, "ConfigMap")["flashsale"]["data"]["FLASHSALE_TRUSTED_PROXIES"] == "10.42.0.0/16"
    assert "value" not in env["FLASHSALE_REDIS_URL"], "no URL (or password) in plain env"

    managed = objects(values_of(REPO_ROOT / "charts/flashsale/ci/external-services-values.yaml"))
    env = {e["name"]: e for e in _container(managed, "flashsale-worker")["env"]}
    assert env["FLASHSALE_LIMITER_REDIS_URL"]["valueFrom"]["secretKeyRef"]["name"] == "flashsale-managed"
    assert env["FLASHSALE_ADMIN_TOKEN"]["valueFrom"]["secretKeyRef"]["name"] == "flashsale-admin"
    assert not _by_kind(managed, "StatefulSet"), "no in-chart Redis or PostgreSQL"
    assert _by_kind(managed, "ConfigMap")["flashsale"]["data"]["FLASHSALE_LIMITER_REDIS_CLUSTER"] == "true"


def test_the_collector_receives_the_pods_traces_when_enabled():
    rendered = objects({"otel": {"collector": {"enabled": True}}})
    env = {e["name"]: e.get("value") for e in _container(rendered, "flashsale-worker")["env"]}
    assert env["OTEL_EXPORTER_OTLP_ENDPOINT"] == "http://flashsale-otel-collector:4318"
    assert env["OTEL_SERVICE_NAME"] == "flashsale-worker"
    assert "flashsale-otel-collector" in _by_kind(rendered, "Service")
    assert objects({})[0] and "OTEL_EXPORTER_OTLP_ENDPOINT" not in {
        e["name"] for e in _container(objects({}), "flashsale-api")["env"]
    }


def _claims(rendered: list[dict]) -> dict[str, set[str]]:
    """StatefulSet name -> the names of its volume claim templates (its persistent mounts)."""
    return {
        o["metadata"]["name"]: {c["metadata"]["name"] for c in o["spec"].get("volumeClaimTemplates", [])}
        for o in rendered
        if o["kind"] == "StatefulSet"
    }


def test_every_pod_and_container_is_locked_down_and_pinned(values_file):
    rendered = objects(values_of(values_file))
    claims = _claims(rendered)
    for name, spec in _pod_specs(rendered).items():
        pod = spec["securityContext"]
        assert pod["runAsNonRoot"] is True, name
        assert pod["runAsUser"] > 0 and pod["runAsGroup"] > 0 and pod["fsGroup"] > 0, name
        assert pod["seccompProfile"] == {"type": "RuntimeDefault"}, name
        assert spec["automountServiceAccountToken"] is False, name
        assert not {"hostNetwork", "hostPID", "hostIPC"} & set(spec), name
        volumes = {v["name"]: v for v in spec.get("volumes", [])}
        for container in spec["containers"]:
            context = container["securityContext"]
            assert context["readOnlyRootFilesystem"] is True, name
            assert context["allowPrivilegeEscalation"] is False, name
            assert context.get("privileged") is not True, name
            assert context["capabilities"]["drop"] == ["ALL"] and "add" not in context["capabilities"], name
            assert context.get("runAsNonRoot") is not False and context.get("runAsUser") != 0, name
            image, _, tag = container["image"].rpartition(":")
            assert image and tag and tag != "latest" and "/" not in tag, container["image"]
            assert container["resources"]["requests"] and container["resources"]["limits"], name
            # Writable paths are emptyDirs and claims only; configuration is mounted read-only.
            for mount in container.get("volumeMounts", []):
                volume = volumes.get(mount["name"])
                if volume is None:
                    assert mount["name"] in claims.get(name, ()), (name, mount)
                elif "configMap" in volume or "secret" in volume:
                    assert mount.get("readOnly") is True, (name, mount)
                else:
                    assert set(volume) == {"name", "emptyDir"}, (name, volume)
        if "-redis" not in name and "-postgresql" not in name and "-otel-collector" not in name:
            (tmp,) = [m for m in spec["containers"][0]["volumeMounts"] if m["mountPath"] == "/tmp"]
            assert "emptyDir" in volumes[tmp["name"]], "flashsale's one writable path"
    for account in _by_kind(rendered, "ServiceAccount").values():
        assert account["automountServiceAccountToken"] is False


SECRET_VALUES = [
    {
        "adminToken": "admin-token-3f9c",
        "postgresql": {"auth": {"password": "db-password-8e1a"}},
        "redis": {"auth": {"password": "redis-password-c27b"}},
        "limiterRedis": {"url": "redis://:limiter-password-51d0@limiter:6379/0"},
    },
    {
        "adminToken": "admin-token-3f9c",
        "redis": {"enabled": False, "external": {"url": "redis://:redis-password-c27b@cache:6379/0"}},
        "postgresql": {"enabled": False, "external": {"url": "postgresql://app:db-password-8e1a@db/sale"}},
        "worker": {"autoscaling": {"mode": "keda"}},
    },
]
SECRETS = ["admin-token-3f9c", "db-password-8e1a", "limiter-password-51d0", "redis-password-c27b"]
SECRET_ENV = {
    "FLASHSALE_ADMIN_TOKEN",
    "FLASHSALE_REDIS_URL",
    "FLASHSALE_LIMITER_REDIS_URL",
    "FLASHSALE_DATABASE_URL",
    "POSTGRES_PASSWORD",
    "PGPASSWORD",
    "REDIS_PASSWORD",
    "REDISCLI_AUTH",
}


@pytest.mark.parametrize("values", SECRET_VALUES, ids=["in-chart", "external"])
def test_secret_values_reach_pods_only_through_secret_key_refs(values):
    texts = render(values)
    found = {secret for secret in SECRETS if any(secret in text for text in texts.values())}
    assert found, "the values carry secrets"
    for secret in found:
        holders = [path for path, text in texts.items() if secret in text]
        assert all(path.endswith("secret.yaml") for path in holders), (secret, holders)
    rendered = objects(values)
    for o in rendered:
        if any(secret in str(o) for secret in found):
            assert o["kind"] == "Secret", o["metadata"]["name"]
    for name, spec in _pod_specs(rendered).items():
        for container in spec["containers"]:
            for env in container.get("env", []):
                if env["name"] in SECRET_ENV and "value" in env:
                    # Only a URL that holds no secret may be plain: the in-chart database's.
                    assert not urlsplit(env["value"]).password, (name, env)
                elif env["name"] in SECRET_ENV:
                    assert set(env) == {"name", "valueFrom"} and "secretKeyRef" in env["valueFrom"], (
                        name,
                        env,
                    )


def _secret_data(rendered: list[dict], name: str) -> dict[str, str]:
    return _by_kind(rendered, "Secret")[name]["stringData"]


def test_the_in_chart_stores_get_passwords_drawn_once_and_kept():
    rendered = objects({})
    redis_password = _secret_data(rendered, "flashsale-redis")["redis-password"]
    postgres_password = _secret_data(rendered, "flashsale-postgresql")["password"]
    assert len(redis_password) == len(postgres_password) == 32
    urls = _secret_data(rendered, "flashsale-urls")
    # One draw per render: the server's password and the apps' URL agree.
    assert urls["redis-url"] == f"redis://:{redis_password}@flashsale-redis.flashsale.svc:6379/0"
    assert postgres_password not in str(urls), "the apps get PGPASSWORD, not a URL with it"
    assert "database-url" not in urls, "the in-chart database's URL holds no secret: a plain env value"
    for name in ("flashsale-redis", "flashsale-postgresql"):
        secret = _by_kind(rendered, "Secret")[name]
        assert secret["metadata"]["annotations"]["helm.sh/resource-policy"] == "keep", "volumes outlive it"
    env = {e["name"]: e for e in _container(rendered, "flashsale-worker")["env"]}
    assert env["PGPASSWORD"]["valueFrom"]["secretKeyRef"] == {
        "name": "flashsale-postgresql",
        "key": "password",
    }
    redis = _by_kind(rendered, "StatefulSet")["flashsale-redis"]["spec"]["template"]["spec"]["containers"][0]
    assert redis["args"][-2:] == ["--requirepass", "$(REDIS_PASSWORD)"]
    assert {e["name"] for e in redis["env"]} == {"REDIS_PASSWORD", "REDISCLI_AUTH"}, "the probe authenticates"
    assert "flashsale-redis" not in _by_kind(objects({"redis": {"auth": {"enabled": False}}}), "Secret")


def test_a_password_becomes_part_of_a_url_only_percent_encoded():
    awkward = "p@ss word/+:%?#"
    urls = _secret_data(objects({"redis": {"auth": {"password": awkward}}}), "flashsale-urls")
    assert urls["redis-url"] == (
        "redis://:p%40ss%20word%2F%2B%3A%25%3F%23@flashsale-redis.flashsale.svc:6379/0"
    )
    assert unquote(urlsplit(urls["redis-url"]).password) == awkward


def test_existing_secrets_hold_the_passwords_and_the_chart_writes_none():
    values = {
        "redis": {"auth": {"existingSecret": "sale-redis", "existingSecretKey": "pw"}},
        "postgresql": {"auth": {"existingSecret": "sale-db"}},
    }
    rendered = objects(values)
    assert not {"flashsale-redis", "flashsale-postgresql"} & set(_by_kind(rendered, "Secret"))
    assert "flashsale-urls" not in _by_kind(rendered, "Secret"), "no URL holds a secret the chart knows"
    env = {e["name"]: e for e in _container(rendered, "flashsale-api")["env"]}
    assert env["REDIS_PASSWORD"]["valueFrom"]["secretKeyRef"] == {"name": "sale-redis", "key": "pw"}
    # Kubernetes expands $(REDIS_PASSWORD), defined before it, into the URL.
    names = [e["name"] for e in _container(rendered, "flashsale-api")["env"]]
    assert names.index("REDIS_PASSWORD") < names.index("FLASHSALE_REDIS_URL")
    assert (
        env["FLASHSALE_REDIS_URL"]["value"]
        == "redis://:$(REDIS_PASSWORD)@flashsale-redis.flashsale.svc:6379/0"
    )
    assert env["PGPASSWORD"]["valueFrom"]["secretKeyRef"] == {"name": "sale-db", "key": "password"}
    postgres = _by_kind(rendered, "StatefulSet")["flashsale-postgresql"]["spec"]["template"]["spec"]
    (password,) = [e for e in postgres["containers"][0]["env"] if e["name"] == "POSTGRES_PASSWORD"]
    assert password["valueFrom"]["secretKeyRef"] == {"name": "sale-db", "key": "password"}


def test_pods_roll_when_the_configuration_or_a_secret_changes():
    def checksums(values):
        pods = _by_kind(objects(values), "Deployment")
        return {
            name: {
                k: v for k, v in pod["spec"]["template"]["metadata"]["annotations"].items() if "checksum" in k
            }
            for name, pod in pods.items()
            if name in ("flashsale-api", "flashsale-worker")
        }

    pinned = {"redis": {"auth": {"password": "a"}}, "postgresql": {"auth": {"password": "b"}}}
    base = checksums(pinned)
    assert base == checksums(pinned)
    for change in (
        {"config": {"logLevel": "DEBUG"}},
        {"adminToken": "t0ken"},
        {"redis": {"auth": {"password": "rotated"}}},
        {"postgresql": {"auth": {"password": "rotated"}}},
    ):
        changed = checksums(_merged(pinned, change))
        for name in base:
            assert changed[name] != base[name], (name, change)


def _merged(base: dict, change: dict) -> dict:
    merged = {**base}
    for key, value in change.items():
        merged[key] = _merged(base[key], value) if isinstance(value, dict) and key in base else value
    return merged


def _published_memory_figure(check: str) -> float:
    """A figure bench.memory measured and published (docs/benchmarks/memory.json)."""
    saved = json.loads((REPO_ROOT / "docs" / "benchmarks" / "memory.json").read_text())
    return next(c["measured"] for c in saved["checks"] if c["target"] == check)


def _redis_maxmemory_mb(rendered: list[dict]) -> int:
    conf = _by_kind(rendered, "ConfigMap")["flashsale-redis"]["data"]["redis.conf"]
    return int(conf.split("maxmemory ")[1].split("mb")[0])


def test_redis_is_sized_for_a_drop_of_the_configured_orders():
    rendered = objects({})
    maxmemory_mb = _redis_maxmemory_mb(rendered)
    capacity = values_of(CHART / "values.yaml")["redis"]["capacity"]
    assert capacity["bytesPerOrder"] >= _published_memory_figure("peak_bytes"), (
        "an order at its peak (queued, with both of its records), as bench.memory measured it"
    )
    assert capacity["baseMiB"] * 2**20 >= capacity["orders"] * _published_memory_figure("bucket_bytes"), (
        "a live limiter bucket for every order's client at once"
    )
    assert maxmemory_mb * 2**20 >= 100_000 * capacity["bytesPerOrder"] + capacity["baseMiB"] * 2**20
    redis = _by_kind(rendered, "StatefulSet")["flashsale-redis"]["spec"]["template"]["spec"]["containers"][0]
    limit_mi = int(redis["resources"]["limits"]["memory"].removesuffix("Mi"))
    assert limit_mi >= maxmemory_mb + maxmemory_mb // 2, (
        "the kernel must not kill Redis before maxmemory refuses writes"
    )
    assert redis["resources"]["requests"]["memory"] == redis["resources"]["limits"]["memory"], "evicted last"
    (claim,) = _by_kind(rendered, "StatefulSet")["flashsale-redis"]["spec"]["volumeClaimTemplates"]
    assert claim["spec"]["resources"]["requests"]["storage"] == f"{max(1024, 3 * maxmemory_mb)}Mi", (
        "AOF and its rewrite, at least 1Gi"
    )
    with pytest.raises(Exception, match=r"redis\.resources\.limits\.memory 200Mi is below"):
        objects({"redis": {"resources": {"limits": {"memory": "200Mi"}}}})
    with pytest.raises(Exception, match="give it in Mi or Gi"):
        objects({"redis": {"resources": {"limits": {"memory": "1.5G"}}}})
    large = objects({"redis": {"capacity": {"orders": 1_000_000}}})
    conf = _by_kind(large, "ConfigMap")["flashsale-redis"]["data"]["redis.conf"]
    assert "maxmemory 827mb" in conf, "64 MiB + 1,000,000 x 800 B, rounded up"
    with pytest.raises(Exception, match=r"redis\.maxmemory 100mb is below"):
        objects({"redis": {"maxmemory": "100mb"}})
    assert (
        "maxmemory 2048mb"
        in _by_kind(objects({"redis": {"maxmemory": "2gb"}}), "ConfigMap")["flashsale-redis"]["data"][
            "redis.conf"
        ]
    )


def test_the_big_drop_benchmark_runs_redis_as_the_chart_does():
    """bench.drop's drop of 100,000 units is judged on the chart's default Redis: the same
    maxmemory, noeviction and an AOF synced on every write."""
    from bench.drop import chart_redis_maxmemory_mb

    rendered = objects({})
    conf = _by_kind(rendered, "ConfigMap")["flashsale-redis"]["data"]["redis.conf"]
    assert _redis_maxmemory_mb(rendered) == chart_redis_maxmemory_mb()
    assert "maxmemory-policy noeviction" in conf and "appendfsync always" in conf


def _max_connections(rendered: list[dict]) -> int:
    postgres = _by_kind(rendered, "StatefulSet")["flashsale-postgresql"]["spec"]["template"]["spec"]
    (argument,) = [a for a in postgres["containers"][0]["args"] if a.startswith("max_connections=")]
    return int(argument.removeprefix("max_connections="))


def test_postgresql_holds_every_pool_at_the_autoscaling_maximums():
    from db.session import make_engine

    # The pool sizes the chart counts on: what the API's and a worker's engines really open.
    api_pool = make_engine("postgresql+psycopg2://u@h/d").pool
    assert api_pool.size() + api_pool._max_overflow == 10
    values = {"api": {"autoscaling": {"maxReplicas": 30}}, "worker": {"autoscaling": {"maxReplicas": 40}}}
    # API pods and workers with a rollout's 25 % surge, hooks, superuser slots.
    needed = (30 + 8) * 10 + (40 + 10) * 4 + 4 + 3
    assert _max_connections(objects(values)) >= needed
    assert _max_connections(objects({})) >= (10 + 3) * 10 + (10 + 3) * 4 + 4 + 3
    with pytest.raises(Exception, match="max_connections 100 cannot hold"):
        objects(values | {"postgresql": {"maxConnections": 100}})
    external = {
        "postgresql": {"enabled": False, "external": {"url": "postgresql://u@db/x", "maxConnections": 50}}
    }
    with pytest.raises(Exception, match="max_connections 50 cannot hold"):
        objects(external)


# What the chart released before the passwords (c269fd2) wrote into its Secrets: a pre-upgrade
# hook runs before this release's Secrets are applied, so it may only read these.
PREVIOUS_SECRET_KEYS = {"flashsale-urls": {"redis-url"}, "flashsale-postgresql": {"password", "database-url"}}


def test_the_pre_upgrade_migration_reads_only_what_the_previous_release_wrote():
    rendered = objects({}, upgrade=True)
    migrate = _by_kind(rendered, "Job")["flashsale-migrate"]
    assert "pre-upgrade" in migrate["metadata"]["annotations"]["helm.sh/hook"]
    refs = [
        env["valueFrom"]["secretKeyRef"]
        for env in migrate["spec"]["template"]["spec"]["containers"][0]["env"]
        if "secretKeyRef" in env.get("valueFrom", {})
    ]
    assert refs, "the hook does read Secrets"
    for ref in refs:
        assert ref["key"] in PREVIOUS_SECRET_KEYS.get(ref["name"], set()), ref


def test_values_that_cannot_work_together_are_refused_at_render():
    for values, reason in [
        ({"worker": {"autoscaling": {"minReplicas": 5, "maxReplicas": 2}}}, "minReplicas 5 is above"),
        ({"api": {"autoscaling": {"minReplicas": 5, "maxReplicas": 2}}}, "minReplicas 5 is above"),
        ({"hooks": {"migrate": {"waitSeconds": 200, "activeDeadlineSeconds": 150}}}, "must be below"),
    ]:
        with pytest.raises(Exception, match=reason):
            objects(values)


def test_scheduling_and_pulling_reach_every_pod():
    placement = {
        "nodeSelector": {"pool": "sale"},
        "tolerations": [{"key": "sale", "operator": "Exists", "effect": "NoSchedule"}],
        "affinity": {"nodeAffinity": {"preferredDuringSchedulingIgnoredDuringExecution": []}},
        "priorityClassName": "sale-critical",
        "podAnnotations": {"example.com/team": "sale"},
    }
    values = {
        "global": {"imageRegistry": "mirror.example.com"},
        "imagePullSecrets": [{"name": "mirror-pull"}],
        "otel": {"collector": {"enabled": True} | placement},
        "hooks": placement | {"seed": {"enabled": True}},
        "tests": {"demo": True},
        **{component: placement for component in ("api", "worker", "redis", "postgresql")},
    }
    rendered = objects(values)
    specs = _pod_specs(rendered)
    assert len(specs) == 9, sorted(specs)  # api, worker, redis, postgresql, collector, 2 hooks, 2 tests
    for name, spec in specs.items():
        for field in ("nodeSelector", "tolerations", "affinity", "priorityClassName"):
            assert spec[field] == placement[field], (name, field)
        assert spec["imagePullSecrets"] == [{"name": "mirror-pull"}], name
        for container in spec["containers"]:
            assert container["image"].startswith("mirror.example.com/"), container["image"]
    images = {c["image"] for spec in specs.values() for c in spec["containers"]}
    assert images == {
        "mirror.example.com/flashsale/flashsale:0.1.0",
        "mirror.example.com/library/redis:7.4.2-alpine",
        "mirror.example.com/library/postgres:17.2-alpine",
        "mirror.example.com/otel/opentelemetry-collector:0.120.0",
    }
    templates = [o["spec"]["template"] for o in rendered if o["kind"] in ("Deployment", "StatefulSet", "Job")]
    for template in templates:
        assert template["metadata"]["annotations"]["example.com/team"] == "sale"
    worker = specs["flashsale-worker"]
    assert (
        _by_kind(objects({}), "Deployment")["flashsale-worker"]["spec"]["template"]["spec"][
            "topologySpreadConstraints"
        ][0]["labelSelector"]["matchLabels"]["app.kubernetes.io/component"]
        == "worker"
    )
    assert worker["topologySpreadConstraints"][0]["topologyKey"] == "kubernetes.io/hostname"


def test_images_are_fully_qualified_for_runtimes_that_refuse_short_names():
    for spec in _pod_specs(objects({"otel": {"collector": {"enabled": True}}})).values():
        for container in spec["containers"]:
            registry = container["image"].split("/")[0]
            assert "." in registry, container["image"]


def test_platform_assigned_users_keep_working():
    """OpenShift assigns each namespace's user: nulling runAsUser & co leaves them out."""
    unset = {"runAsUser": None, "runAsGroup": None, "fsGroup": None}
    values = {
        "podSecurityContext": unset,
        "redis": {"podSecurityContext": unset},
        "postgresql": {"podSecurityContext": unset},
    }
    validate_values(values)
    for name, spec in _pod_specs(objects(values)).items():
        assert not set(unset) & set(spec["securityContext"]), name
        assert spec["securityContext"]["runAsNonRoot"] is True, name


def test_the_ingress_routes_the_buyers_paths_only():
    rendered = objects(values_of(REPO_ROOT / "charts/flashsale/ci/production-like-values.yaml"))
    (rule,) = _by_kind(rendered, "Ingress")["flashsale"]["spec"]["rules"]
    assert rule["host"] == "shop.example.com"
    assert [p["path"] for p in rule["http"]["paths"]] == ["/buy", "/orders", "/products"]
    assert {p["backend"]["service"]["name"] for p in rule["http"]["paths"]} == {"flashsale-api"}


def test_network_policies_admit_only_the_ingress_to_the_api_and_flashsale_to_its_stores():
    rendered = objects(values_of(REPO_ROOT / "charts/flashsale/ci/production-like-values.yaml"))
    policies = _by_kind(rendered, "NetworkPolicy")
    (rule,) = policies["flashsale-api"]["spec"]["ingress"]
    ingress_peer, test_peer, prometheus, keda = rule["from"]
    assert keda == {"namespaceSelector": {"matchLabels": {"kubernetes.io/metadata.name": "keda"}}}
    assert prometheus == {"namespaceSelector": {"matchLabels": {"kubernetes.io/metadata.name": "monitoring"}}}
    assert policies["flashsale-worker"]["spec"]["ingress"] == [
        {"from": [prometheus], "ports": [{"port": "metrics"}]}
    ]
    assert ingress_peer["namespaceSelector"] == {"matchLabels": {"kubernetes.io/metadata.name": "traefik"}}
    assert test_peer["podSelector"]["matchLabels"]["app.kubernetes.io/component"] == "test"
    *_, cidrs, collector = policies["flashsale-egress"]["spec"]["egress"]
    assert cidrs["to"] == [{"ipBlock": {"cidr": "10.20.0.0/16"}}]
    assert collector["ports"] == [{"port": 4318, "protocol": "TCP"}], "extraEgress: the traces' way out"

    in_chart = _by_kind(objects({"networkPolicy": {"enabled": True}}), "NetworkPolicy")
    (redis_from,) = in_chart["flashsale-redis"]["spec"]["ingress"][0]["from"]
    assert redis_from["podSelector"]["matchExpressions"][0]["values"] == ["api", "worker", "migrate", "seed"]
    # With KEDA, its operator may ask the API for /backlog (it never talks to Redis).
    with_keda = _by_kind(objects(_served(KEDA) | {"networkPolicy": {"enabled": True}}), "NetworkPolicy")
    assert with_keda["flashsale-api"]["spec"]["ingress"][0]["from"][-1] == {
        "namespaceSelector": {"matchLabels": {"kubernetes.io/metadata.name": "keda"}}
    }
    assert len(with_keda["flashsale-redis"]["spec"]["ingress"][0]["from"]) == 1
    for store in ("flashsale-redis", "flashsale-postgresql"):
        spec = in_chart[store]["spec"]
        assert "Egress" in spec["policyTypes"] and not spec.get("egress"), f"{store} calls out to nothing"
    # Without an ingress, no ingress-controller peer: only test pods and Prometheus call the API.
    api_peers = in_chart["flashsale-api"]["spec"]["ingress"][0]["from"]
    assert [
        p.get("podSelector", {}).get("matchLabels", {}).get("app.kubernetes.io/component") for p in api_peers
    ] == [
        "test",
        None,
    ]
    # flashsale's pods reach each in-chart server on its own port only, and DNS on port 53
    # anywhere (NodeLocal DNSCache answers from a node address no selector matches).
    egress = in_chart["flashsale-egress"]["spec"]["egress"]
    ports = {
        rule["to"][0]["podSelector"]["matchLabels"]["app.kubernetes.io/component"]
        if "to" in rule
        else "dns": [p["port"] for p in rule["ports"]]
        for rule in egress
    }
    assert ports == {
        "api": [8000],
        "otel-collector": [4318],
        "postgresql": [5432],
        "redis": [6379],
        "dns": [53, 53, 5353, 5353],
    }
    assert not _by_kind(objects({}), "NetworkPolicy"), "off unless asked"


def _selects(selector: dict, labels: dict) -> bool:
    if any(labels.get(k) != v for k, v in selector.get("matchLabels", {}).items()):
        return False
    for expression in selector.get("matchExpressions", []):
        assert expression["operator"] == "In", "only In is used"
        if labels.get(expression["key"]) not in expression["values"]:
            return False
    return True


def test_with_network_policies_every_pod_is_fenced_and_no_peer_is_everyone(values_file):
    values = values_of(values_file)
    policy = values.setdefault("networkPolicy", {})
    policy["enabled"] = True
    if values.get("ingress", {}).get("enabled"):
        policy.setdefault(
            "ingressNamespaceSelector", {"matchLabels": {"kubernetes.io/metadata.name": "edge"}}
        )
    rendered = objects(values)
    policies = [p["spec"] for p in _by_kind(rendered, "NetworkPolicy").values()]
    pods = {o["metadata"]["name"]: o for o in rendered if o["kind"] == "Pod"}
    pods |= {
        o["metadata"]["name"]: o["spec"]["template"]
        for o in rendered
        if o["kind"] in ("Deployment", "StatefulSet", "Job")
    }
    for name, pod in pods.items():
        labels = pod["metadata"]["labels"]
        fenced = {t for p in policies if _selects(p["podSelector"], labels) for t in p["policyTypes"]}
        needed = {"Ingress"} if name.endswith("-otel-collector") else {"Ingress", "Egress"}
        assert needed <= fenced, (name, fenced)
    for policy in policies:
        for rule in policy.get("ingress", []):
            for peer in rule["from"]:
                # An empty selector on its own is every pod (or every namespace's pods).
                assert any(selector for selector in peer.values()), peer


def test_helm_test_checks_readiness_and_runs_the_demo_when_seeded():
    def tests_of(values):
        pods = _by_kind(objects(values), "Pod")
        assert all(p["metadata"]["annotations"]["helm.sh/hook"] == "test" for p in pods.values())
        return {name: pod["spec"]["containers"][0]["args"] for name, pod in pods.items()}

    url = "http://flashsale-api:80"
    assert tests_of({}) == {"flashsale-test-ready": ["flashsale", "check", "ready", "--url", url]}
    demo = tests_of({"tests": {"demo": True}, "hooks": {"seed": {"enabled": True}}})
    assert demo["flashsale-test-demo"] == ["flashsale", "check", "demo", "--url", url]


@pytest.mark.parametrize(
    "bad",
    [
        {"image": {"tag": "latest"}},
        {"worker": {"autoscaling": {"mode": "both"}}},
        {"ingress": {"enabled": True}},  # without trustedProxies every buyer shares one limit
        {"redis": {"enabled": False}},  # and no URL for the external one
        {"postgresql": {"enabled": False, "external": {"url": "mysql://db/x"}}},
        {"redis": {"maxmemory": "lots"}},
        {"image": {"tag": "abc@"}},  # an empty digest
        {"api": {"preStopSleepSeconds": 0}},  # refused by 1.30-1.32 apiservers
        {"limiterRedis": {"cluster": True}},  # a cluster with no address
        {
            "redis": {"enabled": False, "external": {"url": "redis://r:6379/0"}},
            "networkPolicy": {"enabled": True},
        },
        {"hooks": {"migrate": {"activeDeadlineSeconds": 600}}},  # past Helm's hook timeout
        {"metrics": {"serviceMonitor": {"enabled": "yes"}}},
        {"redis": {"podSecurityContext": {"runAsNonRoot": False}}},
        {"tests": {"demo": True}},  # the demo buys a product only the seed makes
        {"api": {"replicaCount": 0}},
        {"api": {"trustedProxies": ["everyone"]}},
        {"config": {"logLevel": "LOUD"}},
        {"config": {"extraEnv": {"lower-case": "x"}}},
        {"rateLimits": {"checkout": {"limits": [{"name": "a"}]}}},  # not a route flashsale limits
        {"rateLimits": {"buy": {"limits": []}}},
        {"replicaCount": 3},  # a misplaced key is an error, not silently ignored
        {"podSecurityContext": {"runAsNonRoot": False}},
        {"podSecurityContext": {"runAsUser": 0}},
        {"securityContext": {"readOnlyRootFilesystem": False}},
        {"securityContext": {"allowPrivilegeEscalation": True}},
        {"securityContext": {"privileged": True}},
        {"securityContext": {"capabilities": {"drop": []}}},
        {"securityContext": {"capabilities": {"add": ["NET_ADMIN"]}}},
        {"config": {"extraEnv": {"FLASHSALE_ADMIN_TOKEN": "s3cret"}}},  # secrets never in the ConfigMap
        {"config": {"extraEnv": {"FLASHSALE_DATABASE_URL": "postgresql://u:pw@db/x"}}},
        # behind an ingress, the policy must name the controller, or every pod may call the API
        {
            "ingress": {"enabled": True},
            "api": {"trustedProxies": ["10.0.0.0/8"]},
            "networkPolicy": {"enabled": True},
        },
    ],
    ids=str,
)
def test_the_schema_rejects_bad_values(bad):
    with pytest.raises(Exception, match="flashsale"):
        validate_values(bad)


_LIMIT = {"name": "per-ip", "key": "ip", "capacity": 5, "refill_per_sec": 1}
POLICY_EXAMPLES = [
    # (a rateLimits route policy, whether the app loads it)
    (RATE_LIMITS["buy"], True),
    ({"limits": [_LIMIT]}, True),
    ({"limits": [{**_LIMIT, "key": "header:x-tenant", "cost": 2, "mode": "enforce"}]}, True),
    ({"limits": [_LIMIT], "on_redis_error": "open", "allow": ["api_key:ops-*", "2001:db8::/48"]}, True),
    ({"limits": [{**_LIMIT, "key": "customer"}], "overrides": [{**_LIMIT, "match": "customer:7"}]}, False),
    ({"limits": [{k: v for k, v in _LIMIT.items() if k != "refill_per_sec"}]}, False),
    ({"limits": [{**_LIMIT, "capacity": 0}]}, False),
    ({"limits": [{**_LIMIT, "capacity": 2.5}]}, False),
    ({"limits": [{**_LIMIT, "refill_per_sec": 0}]}, False),
    ({"limits": [{**_LIMIT, "cost": "1"}]}, False),
    ({"limits": [{**_LIMIT, "mode": "dry"}]}, False),
    ({"limits": [{**_LIMIT, "burst": 3}]}, False),
    ({"limits": [{**_LIMIT, "key": "cookie"}]}, False),
    ({"limits": [{**_LIMIT, "name": "Per IP"}]}, False),
    ({"limits": [_LIMIT] * 9}, False),
    ({"limits": [_LIMIT], "on_redis_error": "maybe"}, False),
    ({"limits": [_LIMIT], "allow": ["somebody"]}, False),
    ({"limits": [_LIMIT], "allow": ["customer:a*"]}, False),
    ({"limits": [_LIMIT], "overrides": [{"match": "10.0.0.0/8", "capacity": 9}]}, False),
    (
        {
            "limits": [_LIMIT],
            "overrides": [{"match": "10.0.0.0/8", "capacity": 9, "refill_per_sec": 1, "x": 1}],
        },
        False,
    ),
]
APP_ONLY = [
    # What a JSON schema cannot say: checked by the app alone (and refused at every pod's start).
    {"limits": [_LIMIT, _LIMIT]},  # names unique
    {"limits": [{**_LIMIT, "cost": 6}]},  # a cost within its capacity
    {"limits": [_LIMIT], "allow": ["10.0.0.1/8"]},  # a network with host bits
    {"limits": [_LIMIT], "allow": ["2001:db8::1"]},  # narrower than the counted /64
]


def _schema_accepts(route_policy) -> bool:
    try:
        validate_values({"rateLimits": {"buy": route_policy}})
    except Exception as exc:
        assert "rateLimits" in str(exc), exc
        return False
    return True


def _app_accepts(route_policy) -> bool:
    try:
        parse_policies(json.dumps({"buy": route_policy}))
    except PolicyError:
        return False
    return True


@pytest.mark.parametrize(("route_policy", "loads"), POLICY_EXAMPLES, ids=str)
def test_the_schema_accepts_a_rate_limit_policy_exactly_when_the_app_loads_it(route_policy, loads):
    """A typo in rateLimits fails the helm upgrade, never a new pod mid-sale."""
    assert _app_accepts(route_policy) is loads, "the example says what the app does"
    assert _schema_accepts(route_policy) is loads


@pytest.mark.parametrize("route_policy", APP_ONLY, ids=str)
def test_what_the_schema_cannot_check_the_app_refuses(route_policy):
    assert _schema_accepts(route_policy) and not _app_accepts(route_policy)


def test_the_schema_has_the_apps_bounds():
    schema = json.loads((REPO_ROOT / "charts/flashsale/values.schema.json").read_text())
    route = schema["properties"]["rateLimits"]["additionalProperties"]["properties"]
    assert route["limits"]["maxItems"] == MAX_LIMITS_PER_ROUTE
    assert route["overrides"]["maxItems"] == route["allow"]["maxItems"] == MAX_MATCHES_PER_ROUTE
    limit = route["limits"]["items"]["properties"]
    kinds = "|".join(KEY_KINDS)
    assert limit["key"]["pattern"] == f"^({kinds}|{HEADER_KIND.pattern.removeprefix('^').removesuffix('$')})$"
    assert limit["mode"]["enum"] == list(Mode.__args__)
    assert limit["name"]["pattern"] == LIMIT_NAME
    assert limit["capacity"]["maximum"] == limit["refill_per_sec"]["maximum"] == MAX_UNITS


# Policy checks we do not follow, and why.
CHECKOV_SKIPS = {
    "CKV_K8S_43": "images are pinned by tag; a digest can be given in image.tag",
    "CKV_K8S_15": "IfNotPresent with pinned tags; Always only adds registry load at scale-out",
    "CKV_K8S_35": "flashsale reads its URLs from the environment (12-factor), from secretKeyRef",
    "CKV_K8S_9": "workers, hook Jobs and test Pods serve no traffic: no readiness to report",
    "CKV_K8S_8": "hook Jobs and test Pods run to completion: nothing to keep alive",
    "CKV_K8S_40": "the official Redis and PostgreSQL images run as their own users (999, 70)",
}
CHECKOV = REPO_ROOT / ".venv-checkov" / "bin" / "checkov"


def test_a_policy_scan_of_the_rendered_manifests_passes(tmp_path):
    """checkov (in its own virtualenv: it pins packages ours need newer) over every values file."""
    assert CHECKOV.exists(), "run `make install` (it builds .venv-checkov)"
    for values_file in VALUE_FILES:
        rendered = render(values_of(values_file))
        manifests = [text for path, text in sorted(rendered.items()) if path.endswith(".yaml")]
        (tmp_path / values_file.name).write_text("\n---\n".join(manifests))
    scan = [
        CHECKOV,
        "-d",
        str(tmp_path),
        "--framework",
        "kubernetes",
        "--skip-download",
        "--compact",
        "--quiet",
    ]
    result = subprocess.run(
        [*scan, "--skip-check", ",".join(CHECKOV_SKIPS)],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert result.returncode == 0, result.stdout[-6000:] + result.stderr[-2000:]
