"""The sale: what ``POST /buy`` decides and everything it decides with.

No HTTP framework here: the decision takes plain data and raises domain refusals
(``service.sale.refusals``); ``service.api`` renders them.
"""
