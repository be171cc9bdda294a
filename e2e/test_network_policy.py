"""The release's NetworkPolicies, enforced by the kind cluster's CNI (kindnet): Redis and
PostgreSQL answer flashsale's own pods and nobody else.

Only collected with E2E_TARGET=kind (``e2e/conftest.py``): the local target runs plain
processes on loopback, where there is no policy to test.
"""

from __future__ import annotations

import pytest

from e2e.kind import PROBE_BLOCKED, PROBE_REACHED, KindTarget

pytestmark = pytest.mark.slow

REACH_SECONDS = 30
"""How long a probe that should connect keeps trying: a policy learns a new pod's address
within seconds."""
BLOCKED_SECONDS = 10
"""How long a probe that should be refused keeps trying (every attempt times out in 3 s)."""


@pytest.mark.parametrize("store", ["redis", "postgresql"])
def test_only_the_releases_pods_reach_its_stores(target: KindTarget, store):
    host, port = target.service_address(store)
    # The migration hook's labels: a Job's pod, so no Service or ReplicaSet takes the probe in.
    insider = target.admitted_labels(store, posing_as="migrate")

    # The control: a pod the policy admits connects, so the probe, the name and the port work
    # and a refusal below is the policy's doing.
    reached = target.probe(target.namespace, insider, host, port, REACH_SECONDS)
    assert reached == PROBE_REACHED, (
        f"a pod labelled {insider} could not reach {host}:{port} (exit {reached})"
    )

    stranger = target.probe(target.namespace, {}, host, port, BLOCKED_SECONDS)
    assert stranger == PROBE_BLOCKED, f"a pod of no component reached {host}:{port} (exit {stranger})"

    # The same labels in another namespace match no peer: a podSelector is namespace-bound.
    with target.scratch_namespace() as elsewhere:
        outsider = target.probe(elsewhere, insider, host, port, BLOCKED_SECONDS)
    assert outsider == PROBE_BLOCKED, f"a pod in {elsewhere} reached {host}:{port} (exit {outsider})"
