"""The broker's admin HTTP side: Prometheus metrics, health endpoints and the web console.

:mod:`.app` serves it (aiohttp, on the broker's event loop); :mod:`.metrics` is ``/metrics``;
:mod:`.api` the console's JSON API over :mod:`.state` (what the broker holds), :mod:`.browse`
(records) and :mod:`.actions` (changes, as Kafka requests); ``static/`` the console's page,
script and style, served as they are (no build step, nothing from the network).
"""
