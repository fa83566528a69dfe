"""Talking to the Prefactor API: models, codec, errors, settings, transport, endpoints.

Nothing here knows about runs; ``aioprefactor._runs`` builds on it, never the reverse.
"""
