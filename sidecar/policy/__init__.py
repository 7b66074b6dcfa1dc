"""Governance on the request path: the policy model, budgets, rate limits, guardrails and
tool rules, enforced locally before a request goes upstream.

`sidecar.policy.gate.open_policy` builds the gate stage from the config; the modules here
are each one concern (budgets.py, limits.py, guardrails.py, tools.py, ...) and import
nothing from the proxy but the request context.
"""
