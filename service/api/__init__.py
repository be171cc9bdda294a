"""The HTTP API: the only room of flashsale that imports Litestar.

``app`` builds the application, ``front_door`` and ``fast_buy`` answer plain ``POST /buy``
in front of Litestar's router, ``problems`` turns every error into RFC 9457 problem details
(the one map of domain refusals), ``routes`` holds the route handlers.
"""
