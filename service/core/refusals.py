"""``Refusal``: the base of every domain "no" (``service.limiter.refusals``, ``service.sale.refusals``).

A refusal says what was refused and why, in the sale's terms; it carries no HTTP. One map,
``service.api.problems.problem_for``, turns each kind into its RFC 9457 problem, for the
Litestar routes and the fast path of ``POST /buy`` alike.
"""

from __future__ import annotations


class Refusal(Exception):
    verdict = None
    """The rate-limit verdict (``service.limiter.ratelimit.Verdict``) when the limits were
    checked on the way: its RateLimit fields go with the answer. None when they were not."""
