"""The rate limiter: token buckets in Redis, a deny cache, a circuit breaker, client identities."""
