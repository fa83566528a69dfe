"""Recorders for agent frameworks, each behind its own optional extra.

- :mod:`aioprefactor.integrations.langchain`: ``PrefactorCallbackHandler`` for LangChain and
  LangGraph (``pip install 'aioprefactor[langchain]'``).
- :mod:`aioprefactor.integrations.openai_agents`: ``PrefactorTracingProcessor`` for the OpenAI
  Agents SDK (``pip install 'aioprefactor[openai-agents]'``).
- :mod:`aioprefactor.integrations.opentelemetry`: ``PrefactorSpanProcessor`` for OpenTelemetry
  spans that follow the GenAI semantic conventions (``pip install
  'aioprefactor[opentelemetry]'``).

Each records through the manual span API (``open_span`` / ``SpanRun.end``) with the events'
own start and end times, so a framework callback only records and enqueues: it never waits
for the network. Importing this package imports no framework.
"""
