"""The ``flashsale`` console script (``service.cli.main``; ``python -m service.cli`` runs it too)."""
