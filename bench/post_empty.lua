-- wrk script: POST {} as one client (no X-Forwarded-For), to measure the 429 path.
wrk.method = "POST"
wrk.body = "{}"
wrk.headers["Content-Type"] = "application/json"
