"""Recording runs and spans: scopes, records, and the engine that delivers them.

Built on ``aioprefactor._wire``; nothing there imports from here.
"""
