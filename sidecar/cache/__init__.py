"""The response cache: exact repeats, and optionally paraphrases within one conversation.

Modules: `keys` (scope, prefix, exact and bucket keys), `normalise` (the volatile system
parts keys ignore), `plan` (per-request controls), `guards` and `semantic` (the semantic
decision), `embedder` (the model in its worker thread), `store` (sqlite), `replay`
(collecting, storing and replaying answers), `stage` (the request-path stage and
`open_cache`), `control` (the control API).
"""
