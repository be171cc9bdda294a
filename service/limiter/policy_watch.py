"""``FLASHSALE_RATE_POLICY_FILE``, watched: a changed file is enforced within a second or two.

Each API process polls the file (``POLL_SECONDS``): its identity and times (``stat`` follows
symlinks, so a Kubernetes ConfigMap update, a swap of the ``..data`` symlink to a new directory,
shows as a new inode) and, every ``REREAD_POLLS`` polls whatever ``stat`` says, its content's
digest. A file larger than ``MAX_POLICY_FILE_BYTES`` is refused by its size alone, never read.
Reading, hashing, parsing and indexing happen in a thread, off the event loop. A changed content
is validated like the file at start; a valid one replaces the policy between two requests
(``Limiter.apply``: no restart, no request dropped, bucket state kept where a limit keeps its
name); an invalid one changes nothing, is logged with the reason and counted in
``flashsale_policy_reload_errors_total``, once per content.
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
import os
from pathlib import Path

from service.core.metrics import POLICY_RELOAD_ERRORS
from service.core.policies import (
    MAX_POLICY_FILE_BYTES,
    PolicyError,
    in_shadow,
    parse_policies,
    policy_digest,
    read_policy_file,
)
from service.limiter.ratelimit import ActivePolicy, Limiter, prepare

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
        return self.bring(self.check())

    def check(self) -> ActivePolicy | None:
        """Look at the file once: a new valid policy, ready to apply, or None. Blocking (it may
        read and parse up to ``MAX_POLICY_FILE_BYTES``): ``watch_policies`` runs it in a thread."""
        self._polls += 1
        signature = _signature(self.path)
        if signature == self._signature and self._content is not None and self._polls % REREAD_POLLS:
            return None
        self._signature = signature
        if signature is not None and signature[-1] > MAX_POLICY_FILE_BYTES:
            return self._reject(
                f"size:{signature}",
                f"{self.path} is {signature[-1]} bytes, above the {MAX_POLICY_FILE_BYTES} allowed",
            )
        try:
            document = read_policy_file(self.path)
        except PolicyError as exc:
            return self._reject(f"error:{exc}", str(exc))
        content = hashlib.sha256(document).hexdigest()
        if content == self._content:
            return None
        try:
            policies = parse_policies(document, self.path.suffix == ".toml", self._limiter.ipv6_prefix)
        except PolicyError as exc:
            return self._reject(content, str(exc))
        self._content = content
        if self._shadow:
            policies = in_shadow(policies)
        if policy_digest(policies) == self._limiter.active.digest:
            return None  # the same policy, written differently (or the one read at start)
        return prepare(policies, self._limiter.ipv6_prefix)

    def bring(self, active: ActivePolicy | None) -> bool:
        """Put what ``check`` found in force (on the event loop, between two requests)."""
        if active is None:
            return False
        self._limiter.apply(active)
        log.info("rate policy applied", extra={"digest": active.digest, "file": str(self.path)})
        return True

    def _reject(self, content: str, reason: str) -> None:
        """Keep the policy in force; log and count a content once (it is polled again and again)."""
        if content != self._content:
            POLICY_RELOAD_ERRORS.inc()
            log.error(
                "rate policy file rejected; the policy in force stays",
                extra={"reason": reason, "file": str(self.path), "digest": self._limiter.active.digest},
            )
        self._content = content
        return None


async def watch_policies(watcher: PolicyWatcher, interval: float = POLL_SECONDS) -> None:
    """Poll until cancelled; a failure of one poll is logged and the next one tries again."""
    while True:
        await asyncio.sleep(interval)
        try:
            watcher.bring(await asyncio.to_thread(watcher.check))
        except Exception:
            log.exception("rate policy watch failed")
