"""``FLASHSALE_RATE_POLICY_FILE``, watched: a changed file is enforced within a second or two.

Each API process polls the file (``POLL_SECONDS``): its identity and times (``stat`` follows
symlinks, so a Kubernetes ConfigMap update, a swap of the ``..data`` symlink to a new directory,
shows as a new inode) and, every ``REREAD_POLLS`` polls whatever ``stat`` says, its content's
digest. A changed content is parsed and validated like the file at start; a valid one replaces the
policy between two requests (``Limiter.apply``: no restart, no request dropped, bucket state kept
where a limit keeps its name); an invalid one changes nothing, is logged with the reason and
counted in ``flashsale_policy_reload_errors_total``, once per content.
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
import os
from pathlib import Path

from service.core.metrics import POLICY_RELOAD_ERRORS
from service.core.policies import PolicyError, in_shadow, parse_policies, policy_digest
from service.limiter.ratelimit import Limiter

log = logging.getLogger(__name__)

POLL_SECONDS = 0.5
REREAD_POLLS = 10
"""Read the content every 5 s even when ``stat`` shows nothing new (an edit within one mtime tick
that keeps the size)."""


def _signature(path: Path) -> tuple[int, ...] | None:
    try:
        stat = os.stat(path)
    except OSError:
        return None
    return stat.st_dev, stat.st_ino, stat.st_mtime_ns, stat.st_ctime_ns, stat.st_size


class PolicyWatcher:
    def __init__(self, path: Path, limiter: Limiter, shadow: bool = False) -> None:
        self.path = path
        self._limiter = limiter
        self._shadow = shadow
        self._signature: tuple[int, ...] | None = None
        self._content: str | None = None
        """The digest of the content last read (None: not yet read, so the first poll reads)."""
        self._polls = 0

    def poll(self) -> bool:
        """Look at the file once; True when it brought a new policy into force."""
        self._polls += 1
        signature = _signature(self.path)
        if signature == self._signature and self._content is not None and self._polls % REREAD_POLLS:
            return False
        self._signature = signature
        try:
            document = self.path.read_bytes()
        except OSError as exc:
            return self._reject(f"error:{exc.errno}", f"cannot read {self.path}: {exc.strerror}")
        content = hashlib.sha256(document).hexdigest()
        if content == self._content:
            return False
        try:
            policies = parse_policies(document, toml=self.path.suffix == ".toml")
        except PolicyError as exc:
            return self._reject(content, str(exc))
        self._content = content
        if self._shadow:
            policies = in_shadow(policies)
        if policy_digest(policies) == self._limiter.active.digest:
            return False  # the same policy, written differently (or the one read at start)
        active = self._limiter.apply(policies)
        log.info("rate policy applied", extra={"digest": active.digest, "file": str(self.path)})
        return True

    def _reject(self, content: str, reason: str) -> bool:
        """Keep the policy in force; log and count a content once (it is polled again and again)."""
        if content != self._content:
            POLICY_RELOAD_ERRORS.inc()
            log.error(
                "rate policy file rejected; the policy in force stays",
                extra={"reason": reason, "file": str(self.path), "digest": self._limiter.active.digest},
            )
        self._content = content
        return False


async def watch_policies(watcher: PolicyWatcher, interval: float = POLL_SECONDS) -> None:
    """Poll until cancelled; a failure of one poll is logged and the next one tries again."""
    while True:
        await asyncio.sleep(interval)
        try:
            watcher.poll()
        except Exception:
            log.exception("rate policy watch failed")
