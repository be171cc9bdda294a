"""flashsale: flash sales and API rate limiting on Redis, RQ and PostgreSQL."""
