"""One adapter per provider family: canonical Anthropic request in, Anthropic response out."""
