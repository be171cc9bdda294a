"""RQ jobs and the worker that applies admitted orders to PostgreSQL."""
